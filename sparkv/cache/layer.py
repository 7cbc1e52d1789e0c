"""transformers cache layers that hold a compressed prompt for real.

:class:`PressedLayer` is one full-attention layer of a sparkv cache. Its life:

1. **prefill** — ``update`` stores the dense prompt keys/values (``self.keys``/``self.values``, exactly what
   :class:`transformers.DynamicLayer` would hold) and returns an :class:`AttentionHandle` instead of tensors;
2. the ``"sparkv"`` attention function (``sparkv.integration.transformers``) recognises the handle, computes dense
   attention over the prompt and calls :meth:`PressedLayer.finish_prefill` with the layer's own queries; the layer
   compresses itself right there (``sparkv.methods.compose.compress_layer``) and frees the dense prompt, so at most
   one layer's dense prompt is alive at a time; where the CUDA decode kernel will take it, the compressed prompt is
   kept as tile records (:class:`~sparkv.cache.layout.SparKPages`, ``decode_storage``) instead of separate arrays;
3. **decode** — ``update`` appends the new tokens to a dense *tail* (a buffer grown by ``tail_chunk`` tokens, not a
   ``torch.cat`` per step) and returns the handle again; the attention function runs
   ``sparkv.kernels.decode_attn.decode_attn`` over the compressed prefix plus the tail.

Why a handle: transformers' attention functions never see the cache (``cache.update`` returns ``(keys, values)``,
then ``fn(module, query, keys, values, mask, ...)`` is called), so the compressed layer cannot be passed as tensors.
``update`` returns ``(handle, handle)``; the handle carries the layer.

Beam search and transformers' batch slicing / repeating select batch rows (:meth:`PressedLayer.select_rows`): every
row is independent (its own lengths, statistic and scales), so a row's compressed prompt and tail move as a whole.

``get_seq_length`` is the *logical* length (prompt positions, left padding included, plus tail tokens), whatever
eviction removed, so transformers computes the right RoPE positions and mask sizes after eviction.

A layer built without a press (``press=None``) is a *recording* layer: prefill keeps the dense prompt plus the last
``record_window`` queries and the padding mask, so several presses can later be applied to one shared prefill
(:meth:`PressedLayer.fork`, used by ``sparkv.generate_many``). A recording layer cannot decode.

:class:`DenseSlidingLayer` is transformers' own ``DynamicSlidingWindowLayer`` (used for Gemma3's sliding layers and
any ``sliding_attention`` layer), kept dense: it never holds more than ``sliding_window - 1`` tokens, so its size is
bounded by the window whatever the context length, and SparK's saving would be small there; its queries only see the
window, which eviction would have to respect position by position. It only adds a compaction so that the bytes it
holds are exactly the bytes its tensors have (transformers keeps a slice view of a one-token-larger buffer).

Neither class sets ``_layer_type`` (that would replace transformers' global layer mapping); build a cache with
``transformers.Cache(layers=[...])`` (``sparkv.cache.build``).
"""

from __future__ import annotations

import copy
import numbers

import torch
from transformers.cache_utils import CacheLayerMixin, DynamicSlidingWindowLayer

from sparkv.cache.layout import Prefix, allocated_bytes, check_row_index, select_rows
from sparkv.config import PressConfig
from sparkv.kernels.decode_attn import decode_storage

__all__ = ["AttentionHandle", "PressedLayer", "DenseSlidingLayer", "DEFAULT_TAIL_CHUNK"]

DEFAULT_TAIL_CHUNK = 64
ATTN_IMPLEMENTATION = "sparkv"


class AttentionHandle:
    """What :meth:`PressedLayer.update` returns in place of key/value tensors; carries the layer."""

    __slots__ = ("layer",)

    def __init__(self, layer: PressedLayer) -> None:
        self.layer = layer

    def __repr__(self) -> str:
        return f"AttentionHandle(layer={self.layer.layer_idx})"


def _mask_to_valid(attention_mask, batch: int, seq_len: int, device) -> torch.Tensor | None:
    """Valid-token mask ``[B, S]`` of a prefill from its 4D attention mask (None: all valid).

    The last query of a left-padded prompt is a real token and sees every valid key, so its mask row is the padding
    mask. Boolean masks (sdpa style) and additive float masks (eager style) are both accepted.
    """
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        raise TypeError(f"sparkv expects a 4D attention mask or None during prefill, got {type(attention_mask)}")
    row = attention_mask[:, 0, -1, :seq_len]
    if row.dtype != torch.bool:
        row = row > torch.finfo(row.dtype).min / 2
    return row.expand(batch, seq_len).to(device)


def crop_amount(tokens_to_remove) -> int:
    """``crop``'s argument as a Python int: an integer, or a one-element integer tensor (transformers' assisted
    decoding passes its count of rejected candidates as one; reading it is the sync its own caches make too)."""
    if isinstance(tokens_to_remove, torch.Tensor) and tokens_to_remove.numel() == 1 \
            and not tokens_to_remove.is_floating_point() and not tokens_to_remove.is_complex() \
            and tokens_to_remove.dtype != torch.bool:
        return int(tokens_to_remove.item())
    if isinstance(tokens_to_remove, bool) or not isinstance(tokens_to_remove, numbers.Integral):
        raise TypeError(f"tokens_to_remove must be an integer, got {tokens_to_remove!r}")
    return int(tokens_to_remove)


def crop_target(length: int, tokens_to_remove: int) -> int:
    """The tokens transformers' ``crop(tokens_to_remove)`` keeps of ``length``: a negative argument removes that many,
    0 none, a positive one is the legacy form (the length to keep; deprecated in 5.17, refused by 5.24's layers)."""
    if tokens_to_remove <= 0:
        return max(0, length + tokens_to_remove)
    return min(length, tokens_to_remove)


class PressedLayer(CacheLayerMixin):
    """A full-attention cache layer that compresses its prompt with a press (module docstring).

    Args:
        press: the press, or None for a recording layer.
        layer_idx: index of this layer in the model.
        num_layers: number of decoder layers.
        tail_chunk: tokens added to the decode tail buffer whenever it is full.
        record_window: recording layers only: how many last prompt queries to keep.
        pressed: ``(position, count)`` of this layer among the model's pressed (full-attention) layers, which
            PyramidKV's per-layer budget runs over (sliding layers stay dense, so a budget falling over every layer
            would average below M over the compressed ones); default ``(layer_idx, num_layers)``.
    """

    is_compileable = False
    is_sliding = False
    is_croppable = True  # decode-tail tokens only (check_crop), which is what assisted decoding rolls back

    def __init__(self, press: PressConfig | None, layer_idx: int, num_layers: int,
                 tail_chunk: int = DEFAULT_TAIL_CHUNK, record_window: int = 0, config=None,
                 pressed: tuple[int, int] | None = None) -> None:
        super().__init__()
        if press is not None and not isinstance(press, PressConfig):
            raise TypeError(f"press must be a PressConfig or None, got {type(press).__name__}")
        if not isinstance(tail_chunk, int) or tail_chunk < 1:
            raise ValueError(f"tail_chunk must be an integer >= 1, got {tail_chunk!r}")
        if not isinstance(record_window, int) or record_window < 0:
            raise ValueError(f"record_window must be an integer >= 0, got {record_window!r}")
        if not isinstance(num_layers, int) or num_layers < 1 or not isinstance(layer_idx, int) \
                or not 0 <= layer_idx < num_layers:
            raise ValueError(f"layer_idx must be in [0, num_layers = {num_layers}), got {layer_idx!r}")
        pressed = (layer_idx, num_layers) if pressed is None else pressed
        if not (isinstance(pressed, tuple) and len(pressed) == 2 and all(isinstance(x, int) for x in pressed)
                and 0 <= pressed[0] < pressed[1] <= num_layers):
            raise ValueError(f"pressed must be (position, count) with 0 <= position < count <= num_layers = "
                             f"{num_layers}, got {pressed!r}")
        self.press = press
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.pressed = pressed
        self.tail_chunk = tail_chunk
        self.record_window = record_window
        self.config = config  # the text config whose _attn_implementation must be "sparkv"
        self._clear()

    # --- state ------------------------------------------------------------------------------------------------

    def _clear(self) -> None:
        self.keys = None  # dense prompt, only between prefill `update` and compression
        self.values = None
        self.prefix: Prefix | None = None  # pages where the CUDA kernel decodes it
        self.tail_keys: torch.Tensor | None = None  # [B, H, capacity, D] buffers
        self.tail_values: torch.Tensor | None = None
        self.tail_len = 0
        self.static_tail: tuple[torch.Tensor, torch.Tensor] | None = None  # (write index, valid tokens): graphs
        self.prompt_len = 0
        self.pending = False  # dense prompt stored, waiting for the attention function
        self.window_queries: torch.Tensor | None = None  # recording layers; the last chunks' queries (chunked)
        self.prefill_tokens: int | None = None  # an announced prompt's length (expect_prefill)
        self._prompt_buffers: tuple[torch.Tensor, torch.Tensor] | None = None  # ... its keys' / values' room
        # Tokens past the announced prompt in the forward that completes it (assisted decoding's first candidates):
        # they join the decode tail once the prompt is compressed.
        self.early_tail: tuple[torch.Tensor, torch.Tensor] | None = None
        self.valid_mask: torch.Tensor | None = None
        self.scaling: float | None = None
        self.is_initialized = False

    @property
    def recording(self) -> bool:
        return self.press is None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.is_initialized = True

    def _check_attention_implementation(self) -> None:
        impl = getattr(self.config, "_attn_implementation", ATTN_IMPLEMENTATION) if self.config is not None \
            else ATTN_IMPLEMENTATION
        if impl != ATTN_IMPLEMENTATION:
            raise RuntimeError(
                f"a sparkv cache needs the model's attention implementation to be {ATTN_IMPLEMENTATION!r}, found "
                f"{impl!r}: run the model inside `with press(model):` (sparkv.Press) or call "
                f"sparkv.integration.transformers.use_sparkv_attention(model)")

    # --- transformers API -------------------------------------------------------------------------------------

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        """Store new tokens; returns ``(handle, handle)`` for the ``"sparkv"`` attention function."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._check_attention_implementation()
        if self.pending:
            raise RuntimeError(
                f"layer {self.layer_idx}: the prompt was stored but never compressed, the 'sparkv' attention function "
                "did not run for it (was the attention implementation changed in between?)")
        if self.prefix is None and not self.recording:
            # Prefill: keep the dense prompt until the attention function has used it and compresses it.
            if self.prefill_tokens is not None:
                self._store_announced(key_states, value_states)
            else:
                self.keys, self.values = key_states, value_states
            self.prompt_len = self.keys.shape[-2]
            self.pending = True
        elif self.recording:
            if self.keys is not None:
                raise RuntimeError("a recording sparkv layer holds one prefill only; fork it with a press "
                                   "(PressedLayer.fork / sparkv.cache.build.fork_cache) before decoding")
            self.keys, self.values = key_states, value_states
            self.prompt_len = key_states.shape[-2]
            self.pending = True
        else:
            self._append_tail(key_states, value_states)
        # A fresh handle per call: a handle stored on the layer would make a reference cycle, and a cache caught in
        # a cycle keeps its GPU memory until Python's cyclic GC happens to run.
        handle = AttentionHandle(self)
        return handle, handle

    def get_seq_length(self) -> int:
        """Logical length: prompt positions (padding included) plus tail tokens, whatever was evicted."""
        return self.prompt_len + self.tail_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self._clear()

    def _store_announced(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Tokens of an announced prompt (:meth:`expect_prefill`). The whole prompt in one forward is kept as it came;
        a prompt in chunks is written into buffers sized for it at its first chunk (no copy of the earlier chunks, no
        second prompt-sized buffer), ``keys`` / ``values`` being views of the part filled. Tokens past the prompt
        become :attr:`early_tail`."""
        start = 0 if self.keys is None else self.keys.shape[-2]
        take = min(key_states.shape[-2], self.prefill_tokens - start)
        if start == 0 and take == self.prefill_tokens:
            self.keys, self.values = key_states[:, :, :take], value_states[:, :, :take]
        else:
            if self.keys is None:
                b, h, _, d = key_states.shape
                self._prompt_buffers = (key_states.new_empty(b, h, self.prefill_tokens, d),
                                        value_states.new_empty(b, h, self.prefill_tokens, value_states.shape[-1]))
            k, v = self._prompt_buffers
            k[:, :, start:start + take] = key_states[:, :, :take]
            v[:, :, start:start + take] = value_states[:, :, :take]
            self.keys, self.values = k[:, :, :start + take], v[:, :, :start + take]
        if take < key_states.shape[-2]:
            self.early_tail = (key_states[:, :, take:], value_states[:, :, take:])

    @property
    def early_tail_len(self) -> int:
        """Tokens of the current forward that follow the announced prompt (0 but in the forward that completes it)."""
        return 0 if self.early_tail is None else self.early_tail[0].shape[-2]

    def expect_prefill(self, tokens: int) -> None:
        """Announce a prompt of ``tokens`` positions, for a prefill in chunks or one whose forward carries more tokens.

        Chunks (transformers' ``prefill_chunk_size``): their dense keys and values accumulate, each chunk attends
        densely over all so far, and the layer compresses itself after the chunk that completes the prompt, with the
        window of the last queries across chunks. Peak memory is then the dense prompt of every layer until the last
        chunk (unchunked, one layer's at a time).

        Tokens past the prompt in the forward that completes it (assisted decoding and prompt lookup verify their
        first candidates in the prompt's forward) are not compressed: they become :attr:`early_tail`, and the
        ``"sparkv"`` attention function gives their queries attention over the compressed prompt plus the decode
        tail, as later decode steps get, after compressing."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"tokens must be an integer >= 1, got {tokens!r}")
        if self.recording or self.prefix is not None or self.keys is not None or self.pending:
            raise RuntimeError(f"layer {self.layer_idx}: an announced prompt needs an empty pressing layer")
        self.prefill_tokens = tokens

    def crop(self, tokens_to_remove: int) -> None:
        """Remove the last ``-tokens_to_remove`` tokens (transformers' meaning: :func:`crop_target`). Only decode-tail
        tokens can go (the candidates assisted decoding and prompt lookup reject); the compressed prompt cannot be cut
        back."""
        tokens_to_remove = crop_amount(tokens_to_remove)
        self.check_crop(tokens_to_remove)
        self.tail_len = crop_target(self.get_seq_length(), tokens_to_remove) - self.prompt_len

    def check_crop(self, tokens_to_remove: int) -> None:
        """Raise unless :meth:`crop` can take ``tokens_to_remove``."""
        keep = crop_target(self.get_seq_length(), crop_amount(tokens_to_remove))
        if keep == self.get_seq_length():
            return
        if keep < self.prompt_len:
            raise NotImplementedError(f"layer {self.layer_idx}: a sparkv layer cannot be cropped to {keep} tokens, "
                                      f"into its compressed prompt ({self.prompt_len} positions): only decode-tail "
                                      "tokens can be removed")
        if self.static_tail is not None:
            raise RuntimeError(f"layer {self.layer_idx}: cannot crop while graph decoding holds a static tail")

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: the batch rows become rows ``beam_idx`` of before (prefix, tail and any recording)."""
        self.select_rows(beam_idx, "beam_idx")

    def __deepcopy__(self, memo: dict) -> PressedLayer:
        """Tensors and state are copied; ``config`` stays shared (it is the model's: the copy must see the
        attention implementation in force when it is used, not when it was copied)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            setattr(new, key, value if key == "config" else copy.deepcopy(value, memo))
        return new

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each batch row repeated ``repeats`` times in place (row b becomes rows b·repeats to b·repeats+repeats-1)."""
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
        rows = self.batch_rows()
        if repeats != 1 and rows is not None:
            self.select_rows(torch.arange(rows).repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the batch rows ``indices`` (integers, or a boolean mask over the rows)."""
        self.select_rows(indices, "indices")

    def batch_rows(self) -> int | None:
        """Batch rows held (None while the layer holds nothing)."""
        if self.prefix is not None:
            return self.prefix.batch
        return None if self.keys is None else self.keys.shape[0]

    def check_rows_selectable(self) -> None:
        """Raise unless the batch rows can be selected now (not mid-prefill, not under graph decoding)."""
        why = "a prompt waits for compression" if self.pending else \
            "graph decoding holds a static tail" if self.static_tail is not None else None
        if why is not None:
            raise RuntimeError(f"layer {self.layer_idx}: its batch rows cannot be selected while {why}")

    def select_rows(self, index: torch.Tensor, name: str = "index", checked: bool = False) -> None:
        """Keep batch rows ``index`` (1-D integers, any order, repeats allowed, or a boolean mask over the rows) of
        everything the layer holds: the compressed prompt (:func:`sparkv.cache.layout.select_rows`), the decode tail
        and any recording. ``name``: the parameter the errors name. ``checked``: ``index`` already came from
        :func:`~sparkv.cache.layout.check_row_index` for these rows (the cache checks once for all its layers)."""
        self.check_rows_selectable()
        rows = self.batch_rows()
        if rows is None:
            return
        index = index.to(self.device) if checked else check_row_index(index, rows, self.device, name)
        if self.prefix is not None:
            self.prefix = select_rows(self.prefix, index, checked=True)
        for field in ("tail_keys", "tail_values", "keys", "values", "window_queries", "valid_mask"):
            if (t := getattr(self, field)) is not None:
                setattr(self, field, t.index_select(0, index))

    def offload(self):
        raise NotImplementedError("sparkv caches do not support offloading")

    def prefetch(self):
        raise NotImplementedError("sparkv caches do not support offloading")

    # --- prefill -> compressed ----------------------------------------------------------------------------------

    @torch.no_grad()
    def finish_prefill(self, query: torch.Tensor, attention_mask, scaling: float | None) -> None:
        """Called by the attention function right after dense prefill attention: compress (or record).

        Args:
            query: ``[B, HQ, S, D]`` this layer's prompt queries, exactly as attention used them (not those of
                :attr:`early_tail`, which joins the decode tail here).
            attention_mask: the 4D mask attention used (None when transformers skipped it: no padding).
            scaling: the layer's attention scale.
        """
        if not self.pending:
            raise RuntimeError(f"layer {self.layer_idx} has no prompt waiting for compression")
        b, _, s, _ = self.keys.shape
        self.pending = False
        self.scaling = scaling
        if self.recording:
            self.window_queries = query[:, :, max(0, s - self.record_window):].clone()
            self.valid_mask = _mask_to_valid(attention_mask, b, s, self.keys.device)
            return
        from sparkv.methods.compose import compress_layer, window_size

        w = window_size(self.press)
        if self.prefill_tokens is not None:  # chunked prefill: the window is the last queries of all chunks so far
            if self.window_queries is not None:
                query = torch.cat([self.window_queries, query], 2)
            if s < self.prefill_tokens:  # more chunks to come: keep the last w queries, compress after the last
                self.window_queries = query[:, :, query.shape[2] - min(w, query.shape[2]):].clone()
                return
            self.window_queries = self.prefill_tokens = self._prompt_buffers = None
        valid = _mask_to_valid(attention_mask, b, s, self.keys.device)  # the last query row sees the whole prompt
        keys, values = self.keys, self.values
        self.keys = self.values = None
        try:
            window = query[:, :, max(0, query.shape[2] - w):] if w else None
            prefix = compress_layer(self.press, window, keys, values, valid, scaling, *self.pressed)
            keys = values = None  # this frame's references (the attention module holds its own until it returns)
            self.prefix = decode_storage(prefix, query.shape[1], self.press.backend)
        except Exception:
            self._clear()  # e.g. a prompt shorter than the press window: leave the layer empty, not half-filled
            raise
        if self.early_tail is not None:
            early, self.early_tail = self.early_tail, None
            self._append_tail(*early)

    def fork(self, press: PressConfig, tail_chunk: int | None = None) -> PressedLayer:
        """A new layer holding this recording layer's prompt compressed with ``press`` (the prompt is not modified)."""
        from sparkv.methods.compose import compress_layer, window_size

        if not self.recording or self.keys is None or self.pending:
            raise RuntimeError("fork needs a recording layer that has seen a complete prefill")
        w = window_size(press)
        if w > self.window_queries.shape[2] and self.window_queries.shape[2] < self.prompt_len:
            raise ValueError(f"press {press.name!r} needs {w} window queries but only {self.window_queries.shape[2]} "
                             "were recorded (record_window too small)")
        new = PressedLayer(press, self.layer_idx, self.num_layers, tail_chunk or self.tail_chunk, config=self.config,
                           pressed=self.pressed)
        new.device, new.dtype, new.is_initialized = self.device, self.dtype, True
        new.prompt_len = self.prompt_len
        new.scaling = self.scaling
        s = self.window_queries.shape[2]
        prefix = compress_layer(press, self.window_queries[:, :, max(0, s - w):] if w else None, self.keys,
                                self.values, self.valid_mask, self.scaling, *self.pressed)
        new.prefix = decode_storage(prefix, self.window_queries.shape[1], press.backend)
        return new

    # --- decode tail --------------------------------------------------------------------------------------------

    def _append_tail(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows = self.prefix.batch if self.prefix is not None else None
        if rows is not None and key_states.shape[0] != rows:
            raise ValueError(f"layer {self.layer_idx}: new tokens for {key_states.shape[0]} batch rows, the cache "
                             f"holds {rows}; a cache serves the batch it was filled with")
        n = key_states.shape[-2]
        if self.static_tail is not None:
            if n != 1:
                raise ValueError(f"layer {self.layer_idx}: a static tail (graph decoding) takes one token per step, "
                                 f"got {n}")
            # Written at a device-side index: the same kernels at the same addresses every step. The host's tail_len
            # is advanced by whoever drives the steps (sparkv.integration.graphs), not here.
            self.tail_keys.index_copy_(2, self.static_tail[0], key_states)
            self.tail_values.index_copy_(2, self.static_tail[0], value_states)
            return
        need = self.tail_len + n
        capacity = 0 if self.tail_keys is None else self.tail_keys.shape[-2]
        if need > capacity:
            self._reserve_tail(-(-need // self.tail_chunk) * self.tail_chunk, key_states, value_states, torch.empty)
        self.tail_keys[:, :, self.tail_len: need] = key_states
        self.tail_values[:, :, self.tail_len: need] = value_states
        self.tail_len = need

    def _reserve_tail(self, capacity: int, like_k: torch.Tensor, like_v: torch.Tensor, alloc) -> None:
        """New tail buffers of ``capacity`` tokens (shaped and typed like ``like_k`` / ``like_v`` along B, H, D; made
        by ``alloc``: ``torch.empty`` or ``torch.zeros``), the tokens held so far copied in."""
        b, h, _, dk = like_k.shape
        new_k = alloc(b, h, capacity, dk, dtype=like_k.dtype, device=like_k.device)
        new_v = alloc(b, h, capacity, like_v.shape[-1], dtype=like_v.dtype, device=like_v.device)
        if self.tail_len:
            new_k[:, :, : self.tail_len] = self.tail_keys[:, :, : self.tail_len]
            new_v[:, :, : self.tail_len] = self.tail_values[:, :, : self.tail_len]
        self.tail_keys, self.tail_values = new_k, new_v

    def tail(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Views of the used part of the tail, ``[B, H, tail_len, D]`` each (None before any decode token)."""
        if self.tail_keys is None:
            return None, None
        return self.tail_keys[:, :, : self.tail_len], self.tail_values[:, :, : self.tail_len]

    def attention_tail(self) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What decode attention reads: :meth:`tail` and no length, or with a static tail the whole buffers and the
        device-side count of valid tokens (``decode_attn``'s ``tail_length``)."""
        if self.static_tail is None:
            return (*self.tail(), None)
        return self.tail_keys, self.tail_values, self.static_tail[1]

    # --- static tail (CUDA-graph decoding) ------------------------------------------------------------------------

    def begin_static_tail(self, capacity: int, write_index: torch.Tensor, valid_tokens: torch.Tensor) -> None:
        """Make the tail a fixed buffer of ``capacity`` tokens, written at ``write_index`` and read up to
        ``valid_tokens`` (``[1]`` int64 / int32 device tensors the caller sets before every step, e.g. inside a captured
        step: ``sparkv.integration.graphs.StaticStep``); the shapes and addresses of a decode step then never change,
        so it can be captured in a CUDA graph once and replayed. The tokens already in the tail are kept."""
        if self.prefix is None or self.pending or self.recording:
            raise RuntimeError(f"layer {self.layer_idx}: a static tail needs a compressed prompt (run the prefill "
                               "first)")
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < self.tail_len + 1:
            raise ValueError(f"capacity must be an integer >= tail_len + 1 = {self.tail_len + 1}, got {capacity!r}")
        p = self.prefix
        like = torch.empty(p.batch, p.num_heads, 0, p.head_dim, dtype=self.dtype, device=p.device)
        # Zeros, not empty: the slots past the length are read by a masked matmul on the PyTorch path.
        self._reserve_tail(capacity, like, like, torch.zeros)
        self.static_tail = (write_index, valid_tokens)

    def end_static_tail(self, tail_len: int) -> None:
        """Back to the growing tail, holding ``tail_len`` tokens (the steps the caller ran); the buffers stay."""
        if not isinstance(tail_len, int) or not 0 <= tail_len <= (0 if self.tail_keys is None else
                                                                   self.tail_keys.shape[-2]):
            raise ValueError(f"tail_len must be within the static tail's capacity, got {tail_len!r}")
        self.static_tail = None
        self.tail_len = tail_len

    # --- accounting -----------------------------------------------------------------------------------------------

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this layer holds (prefix layout, tail buffers, a dense prompt if any, recordings)."""
        out = [] if self.prefix is None else list(self.prefix.tensors())
        for t in (self.tail_keys, self.tail_values, self.keys, self.values, self.window_queries, self.valid_mask):
            if t is not None:
                out.append(t)
        return out

    def layout_bytes(self) -> int:
        """Exact bytes of what the layer holds: the compressed prefix (all metadata) plus the tail buffers (their
        whole capacity: the unused slots are allocated too) plus any dense prompt or recording."""
        total = 0 if self.prefix is None else self.prefix.nbytes()
        for t in (self.tail_keys, self.tail_values, self.keys, self.values, self.window_queries, self.valid_mask):
            if t is not None:
                total += t.numel() * t.element_size()
        return total

    def tail_reserved_bytes(self) -> int:
        """Bytes of tail slots allocated but not yet filled (at most ``tail_chunk`` tokens' worth)."""
        if self.tail_keys is None:
            return 0
        free = self.tail_keys.shape[-2] - self.tail_len
        per_token = (self.tail_keys[:, :, :1].numel() * self.tail_keys.element_size()
                     + self.tail_values[:, :, :1].numel() * self.tail_values.element_size())
        return free * per_token

    def allocated_bytes(self) -> int:
        return allocated_bytes(self.tensors())

    def __reduce_ex__(self, protocol):
        raise TypeError("a sparkv cache layer cannot be pickled or saved: it is bound to the model it was built for "
                        "(copy.deepcopy works)")

    def __repr__(self) -> str:
        state = "recording" if self.recording else ("compressed" if self.prefix is not None else
                                                    ("dense prompt waiting for compression" if self.pending
                                                     else "empty"))
        name = "record" if self.press is None else self.press.name
        return f"PressedLayer({self.layer_idx}, press={name}, {state}, length={self.get_seq_length()})"


class DenseSlidingLayer(DynamicSlidingWindowLayer):
    """transformers' ``DynamicSlidingWindowLayer``, kept dense, whose tensors own their storage exactly.

    transformers keeps ``full[:, :, -(window - 1):]`` of a freshly concatenated buffer, i.e. a view one token larger
    than what it shows; this subclass clones that view so the held bytes equal the counted bytes.
    """

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        out = super().update(key_states, value_states, *args, **kwargs)
        self._compact()
        return out

    def crop(self, tokens_to_remove) -> None:
        super().crop(crop_amount(tokens_to_remove))
        self._compact()  # transformers' crop keeps a slice of the buffer

    def end_past_recording(self) -> None:
        """Back to holding the window once a generation that recorded past states is over (transformers' assisted
        decoding turns recording on and never off; left on, later turns would keep every token)."""
        self.record_past = False
        if self.keys is not None and self.keys.dim() == 4 and self.keys.shape[-2] > self.sliding_window - 1:
            self.keys = self.keys[:, :, -self.sliding_window + 1:]
            self.values = self.values[:, :, -self.sliding_window + 1:]
        self._compact()

    def _compact(self) -> None:
        from sparkv.methods.compose import compact

        if self.keys is not None:
            self.keys, self.values = compact(self.keys), compact(self.values)

    def copy(self) -> DenseSlidingLayer:
        """A deep copy (tensors cloned), so two caches can decode from one prefill."""
        new = copy.copy(self)
        if self.keys is not None:
            new.keys, new.values = self.keys.clone(), self.values.clone()
        return new
