"""The compressed key layouts, stored for real, and their exact byte counts.

Every container here owns compact tensors (no views into larger buffers), so the bytes counted from the layout
equal the bytes of the storages really allocated; ``allocated_bytes`` measures the latter independently.

SparK layout per (batch row b, KV head h, token t) — spec §3, "What must be stored":
    kept_values [B, H, S, DK]   model dtype, the DK kept entries in channel order
    kept_bits   [B, H, S, NW]   int32 words, NW = ceil(D / 32); bit j % 32 of word j // 32 set iff channel j kept
    sign_bits   [B, H, S, NW]   int32 words; bit set iff K[t, j] > 0 (sign(0) -> -1); only pruned bits are read
    scale       [B, H, S]       model dtype, r_t (see ``sparkv.methods.spark`` for each recovery)
    u           [B, H, D]       float32, the per-head channel factor u_j
Bytes per (token, KV head), bf16, D = 128: 2·DK + 16 + 16 + 2 (λ = 0.5: 162 B; λ = 0.8: 86 B; dense: 256 B).

:class:`SparKPages` holds the same data tile-major, the form the CUDA decode kernel reads: for every (row, KV head),
one record per 32-token tile ``[V rows | kept values | kept words | sign words | scales | zeros to 128 bytes]``
(:func:`tile_record`). A tile's five loads then hit one contiguous region instead of five arrays, which DRAM serves
faster (1.03x the split kernel, 1.38-1.42x over dense SDPA at λ = 0.8 against 1.34-1.40x: BENCHMARKS.md "Session
18"). ``SparKPages.from_compressed`` / ``to_compressed`` convert exactly, both ways.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import torch

from sparkv.config import RECOVERY_VARIANTS

WORD_BITS = 32
_BIT_WEIGHTS = {}


def num_words(head_dim: int) -> int:
    """int32 words needed for a ``head_dim``-bit map."""
    return (head_dim + WORD_BITS - 1) // WORD_BITS


def _weights(device: torch.device) -> torch.Tensor:
    key = str(device)
    if key not in _BIT_WEIGHTS:
        _BIT_WEIGHTS[key] = torch.bitwise_left_shift(torch.ones(WORD_BITS, dtype=torch.int64, device=device),
                                                     torch.arange(WORD_BITS, device=device))
    return _BIT_WEIGHTS[key]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean ``[..., D]`` map into int32 words ``[..., ceil(D/32)]`` (channel j -> bit j%32 of word j//32)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"pack_bits expects a bool tensor, got {mask.dtype}")
    d = mask.shape[-1]
    nw = num_words(d)
    padded = torch.nn.functional.pad(mask, (0, nw * WORD_BITS - d)) if nw * WORD_BITS != d else mask
    words = (padded.view(*mask.shape[:-1], nw, WORD_BITS).to(torch.int64) * _weights(mask.device)).sum(-1)
    # Reinterpret the unsigned 32-bit pattern as int32 (two's complement).
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32)


def unpack_bits(words: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: int32 words ``[..., NW]`` -> bool ``[..., head_dim]``."""
    if words.dtype != torch.int32:
        raise TypeError(f"unpack_bits expects int32 words, got {words.dtype}")
    if not 0 < head_dim <= words.shape[-1] * WORD_BITS:
        raise ValueError(f"head_dim must be in [1, {words.shape[-1] * WORD_BITS}] for {words.shape[-1]} words, "
                         f"got {head_dim}")
    shifts = torch.arange(WORD_BITS, device=words.device, dtype=torch.int32)
    bits = torch.bitwise_and(torch.bitwise_right_shift(words.unsqueeze(-1), shifts), 1)
    return bits.flatten(-2)[..., :head_dim].bool()


def popcount(words: torch.Tensor) -> torch.Tensor:
    """Set bits of each int32 word (int64 result), without unpacking to one byte per bit."""
    x = words.to(torch.int64) & 0xFFFFFFFF
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return (x * 0x01010101 & 0xFFFFFFFF) >> 24


def _check_float4(name: str, t: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or not t.is_floating_point():
        desc = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be a floating-point [B, H, S, D] tensor, got {desc}")
    return tuple(t.shape)


def _check_words(name: str, t: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int32 or tuple(t.shape) != shape:
        desc = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
        raise ValueError(f"{name} must be int32 {list(shape)}, got {desc}")


def _check_int_tensor(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool or tuple(t.shape) != shape:
        desc = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else repr(t)
        raise ValueError(f"{name} must be an integer {list(shape)} tensor, got {desc}")


def _tensor_fields(obj) -> list[torch.Tensor]:
    return [v for f in fields(obj) if isinstance(v := getattr(obj, f.name), torch.Tensor)]


def layout_bytes(obj) -> int:
    """Bytes of every tensor of a layout, counted from shapes and dtypes."""
    return sum(t.numel() * t.element_size() for t in _tensor_fields(obj))


def allocated_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (what the allocator really handed out)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        seen[(str(t.device), storage.data_ptr())] = storage.nbytes()
    return sum(seen.values())


@dataclass
class DenseKeys:
    """Uncompressed keys ``[B, H, S, D]`` (full cache, eviction only, or λ = 0 controls)."""

    keys: torch.Tensor

    def __post_init__(self) -> None:
        _check_float4("keys", self.keys)

    @property
    def head_dim(self) -> int:
        return self.keys.shape[-1]

    @property
    def num_tokens(self) -> int:
        return self.keys.shape[-2]

    def nbytes(self) -> int:
        return layout_bytes(self)

    def to_dense(self) -> torch.Tensor:
        return self.keys


@dataclass
class SparKKeys:
    """Per-token unstructured pruned keys with the metadata their recovery needs (module docstring).

    ``recovery`` decides which optional fields exist:
        mean, mean_linear:     sign_bits, scale, u
        constant:              sign_bits (magnitude ``constant``; no per-token or per-head data)
        zero:                  none
        gaussian, exponential: sign_bits, scale (mean pruned saliency), spread (its std; gaussian only), u
    """

    kept_values: torch.Tensor
    kept_bits: torch.Tensor
    head_dim: int
    recovery: str = "mean"
    sign_bits: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    u: torch.Tensor | None = None
    spread: torch.Tensor | None = None
    constant: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.head_dim, int) or isinstance(self.head_dim, bool) or self.head_dim < 1:
            raise ValueError(f"head_dim must be an integer >= 1, got {self.head_dim!r}")
        b, h, s, dk = _check_float4("kept_values", self.kept_values)
        nw = num_words(self.head_dim)
        if not (0 < dk <= self.head_dim):
            raise ValueError(f"kept channels must be in [1, {self.head_dim}], got {dk}")
        if self.recovery not in RECOVERY_VARIANTS:
            raise ValueError(f"recovery must be one of {', '.join(RECOVERY_VARIANTS)}; got {self.recovery!r}")
        _check_words("kept_bits", self.kept_bits, (b, h, s, nw))
        needs_signs = self.recovery != "zero"
        needs_scale = self.recovery in ("mean", "mean_linear", "gaussian", "exponential")
        if needs_signs:
            _check_words(f"sign_bits (recovery {self.recovery!r})", self.sign_bits, (b, h, s, nw))
        if needs_scale:
            for name, t, shape in (("scale", self.scale, (b, h, s)), ("u", self.u, (b, h, self.head_dim))):
                if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or not t.is_floating_point():
                    raise ValueError(f"recovery {self.recovery!r} needs {name} as a floating-point {list(shape)} "
                                     f"tensor, got {None if t is None else (tuple(t.shape), t.dtype)}")
        if self.recovery == "gaussian" and (self.spread is None or self.spread.shape != (b, h, s)):
            raise ValueError("recovery 'gaussian' needs spread [B, H, S]")
        if not (0.0 <= float(self.constant) < float("inf")):
            raise ValueError(f"constant must be a finite number >= 0, got {self.constant!r}")
        if s > 0:
            # Every token keeps exactly DK channels below head_dim: the kernels locate kept values by rank.
            tail_bits = nw * WORD_BITS - self.head_dim
            if tail_bits and bool((self.kept_bits[..., -1].to(torch.int64) & 0xFFFFFFFF
                                   >> (WORD_BITS - tail_bits) << (WORD_BITS - tail_bits)).ne(0).any()):
                raise ValueError(f"kept_bits has bits set at channels >= head_dim ({self.head_dim})")
            counts = popcount(self.kept_bits).sum(-1)
            if not bool((counts == dk).all()):
                bad = counts[counts != dk][0].item()
                raise ValueError(f"kept_bits must mark exactly {dk} channels (the kept_values' last dimension) "
                                 f"for every token; a token marks {bad}")

    @property
    def kept(self) -> int:
        return self.kept_values.shape[-1]

    @property
    def num_tokens(self) -> int:
        return self.kept_values.shape[-2]

    def nbytes(self) -> int:
        return layout_bytes(self)


@dataclass
class ThinKKeys:
    """Structured pruned keys: the same DK channels for every token of a (b, h) (spec §5).

    kept_values [B, H, S, DK] model dtype;  channel_idx [B, H, DK] int16, ascending.
    Pruned channels read as zero (ThinK has no recovery).
    """

    kept_values: torch.Tensor
    channel_idx: torch.Tensor
    head_dim: int

    def __post_init__(self) -> None:
        b, h, _, dk = _check_float4("kept_values", self.kept_values)
        idx = self.channel_idx
        _check_int_tensor("channel_idx", idx, (b, h, dk))
        if not 0 < dk <= self.head_dim:
            raise ValueError(f"kept channels must be in [1, {self.head_dim}], got {dk}")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.head_dim
                            or (dk > 1 and not bool((idx[..., 1:] > idx[..., :-1]).all()))):
            raise ValueError(f"channel_idx must hold ascending distinct channels in [0, {self.head_dim})")

    @property
    def kept(self) -> int:
        return self.kept_values.shape[-1]

    @property
    def num_tokens(self) -> int:
        return self.kept_values.shape[-2]

    def nbytes(self) -> int:
        return layout_bytes(self)


Keys = DenseKeys | SparKKeys | ThinKKeys


@dataclass
class CompressedKV:
    """One layer's compressed prompt: keys in one of the layouts above, dense values, per-row lengths.

    values  [B, H, S, D] model dtype.
    lengths [B] int32: row b's valid tokens are ``0 .. lengths[b]-1`` (left-aligned); the rest is padding. Fixed
            for the prefix's life: ``min_length`` / ``max_length`` are read from it at construction.
    """

    keys: Keys
    values: torch.Tensor
    lengths: torch.Tensor

    def __post_init__(self) -> None:
        b, h, s, d = _check_float4("values", self.values)
        key_tensor = self.keys.keys if isinstance(self.keys, DenseKeys) else self.keys.kept_values
        if self.keys.num_tokens != s:
            raise ValueError(f"keys hold {self.keys.num_tokens} tokens but values hold {s}")
        if tuple(key_tensor.shape[:2]) != (b, h) or self.keys.head_dim != d:
            raise ValueError(f"keys are [B, H] = {list(key_tensor.shape[:2])} with head_dim {self.keys.head_dim}, "
                             f"values [B, H, S, D] = {[b, h, s, d]}: they must agree")
        if key_tensor.dtype != self.values.dtype or key_tensor.device != self.values.device:
            raise ValueError(f"keys ({key_tensor.dtype}, {key_tensor.device}) and values ({self.values.dtype}, "
                             f"{self.values.device}) must share dtype and device")
        _check_int_tensor("lengths", self.lengths, (b,))
        # Read once here (one host sync per prefix), so that decode steps never read lengths back from the GPU.
        self.min_length, self.max_length = (int(x) for x in torch.aminmax(self.lengths)) if b else (0, 0)
        if self.min_length < 0 or self.max_length > s:
            raise ValueError(f"lengths must be in [0, {s}] (the tokens stored), got {self.lengths.tolist()}")

    @property
    def num_tokens(self) -> int:
        return self.values.shape[-2]

    @property
    def batch(self) -> int:
        return self.values.shape[0]

    @property
    def num_heads(self) -> int:
        return self.values.shape[1]

    @property
    def head_dim(self) -> int:
        return self.values.shape[-1]

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    @property
    def device(self) -> torch.device:
        return self.values.device

    def tensors(self) -> list[torch.Tensor]:
        return [*_tensor_fields(self.keys), self.values, self.lengths]

    def nbytes(self) -> int:
        """Exact bytes of the layout, all metadata included."""
        return self.keys.nbytes() + self.values.numel() * self.values.element_size() + \
            self.lengths.numel() * self.lengths.element_size()

    def allocated_bytes(self) -> int:
        return allocated_bytes(self.tensors())


TILE_TOKENS = 32  # tokens per record: the CUDA kernel's tile (one token per lane of a warp)
RECORD_ALIGN = 128  # bytes: records start on DRAM / L2 lines
PAGED_RECOVERIES = ("mean", "mean_linear", "zero", "constant")


@dataclass(frozen=True)
class TileRecord:
    """Byte offsets of each field inside one tile record, and the record's size (a multiple of 128). Each field is
    the tile's 32 rows of that array, back to back; absent fields (no sign words for ``zero`` recovery, no scales for
    ``zero`` / ``constant``) take no bytes and their offset is None."""

    values: int
    kept_values: int
    kept_bits: int
    sign_bits: int | None
    scale: int | None
    nbytes: int


def tile_record(head_dim: int, kept: int, recovery: str, dtype: torch.dtype) -> TileRecord:
    """The record layout of a SparK prefix (``dtype``: the values', kept values' and scales' dtype)."""
    if recovery not in PAGED_RECOVERIES:
        raise ValueError(f"recovery must be one of {', '.join(PAGED_RECOVERIES)} for pages, got {recovery!r}")
    es, words = dtype.itemsize, num_words(head_dim) * 4
    off = TILE_TOKENS * head_dim * es
    kept_values = off
    off += TILE_TOKENS * kept * es
    off = -(-off // 4) * 4  # words on 4-byte boundaries (odd DK, or a 1-byte dtype)
    kept_bits = off
    off += TILE_TOKENS * words
    sign_bits = None
    if recovery != "zero":
        sign_bits, off = off, off + TILE_TOKENS * words
    scale = None
    if recovery in ("mean", "mean_linear"):
        scale, off = off, off + TILE_TOKENS * es
    return TileRecord(0, kept_values, kept_bits, sign_bits, scale, -(-off // RECORD_ALIGN) * RECORD_ALIGN)


def _record_field(pages: torch.Tensor, offset: int, dtype: torch.dtype, cols: int) -> torch.Tensor:
    """``[B*H, NT, 32, cols]`` view of one field of every record (no copy)."""
    rows, tiles, _ = pages.shape
    raw = pages[..., offset: offset + TILE_TOKENS * cols * dtype.itemsize]
    return raw.view(dtype).view(rows, tiles, TILE_TOKENS, cols)


@dataclass
class SparKPages:
    """A SparK prefix stored tile-major (module docstring), with everything decode attention needs.

    pages   [B*H, ceil(S / 32), record bytes] uint8, :func:`tile_record` inside; rows past S are zeros.
    lengths [B] int32, as :class:`CompressedKV`'s; u [B, H, D] (mean recoveries) or None.
    Build it with :meth:`from_compressed`; shapes and dtypes are kept as fields, so reading them never unpacks.
    """

    pages: torch.Tensor
    lengths: torch.Tensor
    u: torch.Tensor | None
    batch: int
    num_heads: int
    num_tokens: int
    head_dim: int
    kept: int
    dtype: torch.dtype
    recovery: str = "mean"
    constant: float = 0.0

    def __post_init__(self) -> None:
        self.record = tile_record(self.head_dim, self.kept, self.recovery, self.dtype)
        shape = (self.batch * self.num_heads, -(-self.num_tokens // TILE_TOKENS), self.record.nbytes)
        if not isinstance(self.pages, torch.Tensor) or self.pages.dtype != torch.uint8 \
                or tuple(self.pages.shape) != shape or not self.pages.is_contiguous():
            desc = f"{self.pages.dtype} {tuple(self.pages.shape)}" if isinstance(self.pages, torch.Tensor) else \
                type(self.pages).__name__
            raise ValueError(f"pages must be a contiguous uint8 {list(shape)} tensor, got {desc}")
        _check_int_tensor("lengths", self.lengths, (self.batch,))
        if (self.u is None) != (self.record.scale is None) or (
                self.u is not None and tuple(self.u.shape) != (self.batch, self.num_heads, self.head_dim)):
            raise ValueError(f"recovery {self.recovery!r} needs u "
                             + ("[B, H, D]" if self.record.scale is not None else "None"))
        self.min_length, self.max_length = (int(x) for x in torch.aminmax(self.lengths)) if self.batch else (0, 0)
        if self.min_length < 0 or self.max_length > self.num_tokens:
            raise ValueError(f"lengths must be in [0, {self.num_tokens}], got {self.lengths.tolist()}")

    @property
    def device(self) -> torch.device:
        return self.pages.device

    @classmethod
    def from_compressed(cls, prefix: CompressedKV) -> SparKPages:
        """The pages of a SparK prefix: its per-token arrays copied into the records, ``u`` and ``lengths`` shared.
        Raises ``ValueError`` for other layouts, the sampled recoveries (``gaussian``, ``exponential``) and scales in
        another dtype than the values."""
        keys = prefix.keys
        if not isinstance(keys, SparKKeys):
            raise ValueError(f"pages hold SparK keys, got {type(keys).__name__}")
        if keys.recovery not in PAGED_RECOVERIES:
            raise ValueError(f"recovery must be one of {', '.join(PAGED_RECOVERIES)} for pages, got {keys.recovery!r}")
        if keys.scale is not None and keys.scale.dtype != prefix.dtype:
            raise ValueError(f"pages store scales in the values' dtype {prefix.dtype}, got {keys.scale.dtype}")
        b, h, s, d = prefix.values.shape
        rec = tile_record(d, keys.kept, keys.recovery, prefix.dtype)
        tiles = -(-s // TILE_TOKENS)
        pages = torch.empty(b * h, tiles, rec.nbytes, dtype=torch.uint8, device=prefix.device)
        fields = [(rec.values, prefix.values), (rec.kept_values, keys.kept_values), (rec.kept_bits, keys.kept_bits),
                  (rec.sign_bits, keys.sign_bits), (rec.scale, None if keys.scale is None else keys.scale[..., None])]
        end = 0
        for offset, src in fields:
            if offset is None:
                continue
            pages[..., end:offset] = 0  # alignment gaps
            dst = _record_field(pages, offset, src.dtype, src.shape[-1])
            cols = src.shape[-1]
            src = src.reshape(b * h, s, cols)
            full = s // TILE_TOKENS
            dst[:, :full] = src[:, : full * TILE_TOKENS].reshape(b * h, full, TILE_TOKENS, cols)
            if s % TILE_TOKENS:
                dst[:, full, : s % TILE_TOKENS] = src[:, full * TILE_TOKENS:]
                dst[:, full, s % TILE_TOKENS:] = 0
            end = offset + TILE_TOKENS * cols * src.element_size()
        pages[..., end:] = 0
        return cls(pages, prefix.lengths, keys.u, b, h, s, d, keys.kept, prefix.dtype, keys.recovery,
                   float(keys.constant))

    def _rows(self, offset: int, dtype: torch.dtype, cols: int, start: int, end: int) -> torch.Tensor:
        """One field for tokens ``start .. end - 1`` as a compact ``[B, H, end - start, cols]`` tensor."""
        t0 = start // TILE_TOKENS
        field = _record_field(self.pages, offset, dtype, cols)[:, t0: -(-end // TILE_TOKENS)]
        rows = field.reshape(self.batch, self.num_heads, field.shape[1] * TILE_TOKENS, cols)  # explicit: B may be 0
        return rows[:, :, start - t0 * TILE_TOKENS: end - t0 * TILE_TOKENS].contiguous()

    def unpack(self, start: int = 0, end: int | None = None) -> tuple[SparKKeys, torch.Tensor]:
        """``(keys, values)`` of tokens ``start .. end - 1`` (default: all) as arrays (:class:`SparKKeys` and
        ``[B, H, end - start, D]``): what the PyTorch and Triton paths read, block by block."""
        end = self.num_tokens if end is None else end
        if not 0 <= start <= end <= self.num_tokens:
            raise ValueError(f"start, end must satisfy 0 <= start <= end <= {self.num_tokens}, got {start}, {end}")
        rec, nw = self.record, num_words(self.head_dim)
        keys = SparKKeys(
            kept_values=self._rows(rec.kept_values, self.dtype, self.kept, start, end),
            kept_bits=self._rows(rec.kept_bits, torch.int32, nw, start, end), head_dim=self.head_dim,
            recovery=self.recovery,
            sign_bits=None if rec.sign_bits is None else self._rows(rec.sign_bits, torch.int32, nw, start, end),
            scale=None if rec.scale is None else self._rows(rec.scale, self.dtype, 1, start, end)[..., 0],
            u=self.u, constant=self.constant)
        return keys, self._rows(rec.values, self.dtype, self.head_dim, start, end)

    def to_compressed(self) -> CompressedKV:
        """The same prefix as arrays (exactly the :class:`CompressedKV` it was built from)."""
        keys, values = self.unpack()
        return CompressedKV(keys, values, self.lengths)

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.pages, self.lengths, self.u) if t is not None]

    def nbytes(self) -> int:
        """Exact bytes of the layout, all metadata (record padding included)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def allocated_bytes(self) -> int:
        return allocated_bytes(self.tensors())


Prefix = CompressedKV | SparKPages  # a compressed prompt in either form


def check_row_index(index, rows: int, device: torch.device, name: str = "index") -> torch.Tensor:
    """``index`` as int64 row numbers on ``device``, after checking it: a 1-D integer tensor (or list) of rows in
    ``[0, rows)``, or a 1-D boolean mask over the ``rows`` (transformers' ``batch_select_indices`` takes both).
    ``name`` is the parameter the errors name."""
    if isinstance(index, (list, tuple)):
        index = torch.tensor(index)
    if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.is_floating_point() or index.is_complex():
        desc = f"{index.dtype} {tuple(index.shape)}" if isinstance(index, torch.Tensor) else type(index).__name__
        raise ValueError(f"{name} must be a 1-D tensor of batch rows (integers, or a boolean mask over the {rows} "
                         f"rows), got {desc}")
    if index.dtype == torch.bool:
        if index.numel() != rows:
            raise ValueError(f"{name}: a boolean mask must cover the {rows} batch rows, got {index.numel()}")
        index = index.nonzero().flatten()
    index = index.to(device=device, dtype=torch.long)
    if index.numel():
        low, high = (int(x) for x in torch.aminmax(index))  # one read back
        if low < 0 or high >= rows:
            raise ValueError(f"{name} must hold rows in [0, {rows}), got {index.tolist()}")
    return index


def select_rows(prefix: Prefix, index: torch.Tensor, checked: bool = False) -> Prefix:
    """Batch rows ``index`` of a prefix (any order, repeats allowed), as a new prefix in the same form: what beam
    search's reordering and transformers' batch slicing and repeating ask of a cache.

    Rows are independent in every layout: lengths, statistics ``u`` and scales are per row, and the sampled
    recoveries draw by (seed, head, token, channel), never by row. The key arrays are not validated again (rows of a
    valid layout are valid); lengths are, as a constructor reads them once.

    Args:
        prefix: a :class:`CompressedKV` or :class:`SparKPages`.
        index: row numbers in ``[0, prefix.batch)`` or a boolean mask (:func:`check_row_index`).
        checked: ``index`` already came from :func:`check_row_index` for this prefix (skips a read back).
    """
    index = index if checked else check_row_index(index, prefix.batch, prefix.device)
    lengths = prefix.lengths.index_select(0, index)
    if isinstance(prefix, SparKPages):
        rows = prefix.pages.view(prefix.batch, prefix.num_heads, *prefix.pages.shape[1:]).index_select(0, index)
        return SparKPages(rows.reshape(-1, *prefix.pages.shape[1:]), lengths,
                          None if prefix.u is None else prefix.u.index_select(0, index), index.numel(),
                          prefix.num_heads, prefix.num_tokens, prefix.head_dim, prefix.kept, prefix.dtype,
                          prefix.recovery, prefix.constant)
    if not isinstance(prefix, CompressedKV):
        raise TypeError(f"prefix must be a CompressedKV or SparKPages, got {type(prefix).__name__}")
    keys = copy.copy(prefix.keys)
    for f in fields(keys):
        if isinstance(t := getattr(keys, f.name), torch.Tensor):
            setattr(keys, f.name, t.index_select(0, index))
    return CompressedKV(keys, prefix.values.index_select(0, index), lengths)
