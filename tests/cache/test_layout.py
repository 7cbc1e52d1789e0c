"""Bit packing round trips and byte accounting of the compressed layouts."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparkv.cache.layout import CompressedKV, DenseKeys, allocated_bytes, num_words, pack_bits, unpack_bits
from sparkv.config import kept_channels
from sparkv.kernels.select_pack.reference import select_pack_ref
from sparkv.methods.spark import window_statistic


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, 300), n=st.integers(1, 7), seed=st.integers(0, 2**31 - 1))
def test_pack_unpack_round_trip(d, n, seed):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(n, d, generator=g) < torch.rand(1, generator=g)
    words = pack_bits(mask)
    assert words.dtype == torch.int32 and words.shape == (n, num_words(d))
    assert torch.equal(unpack_bits(words, d), mask)


def test_pack_bit_order_is_channel_j_to_bit_j_mod_32():
    mask = torch.zeros(64, dtype=torch.bool)
    mask[[0, 5, 31, 32, 63]] = True
    words = pack_bits(mask).tolist()
    assert words[0] == (1 | 1 << 5 | -(1 << 31))  # bit 31 set -> negative int32
    assert words[1] == (1 | -(1 << 31))


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 4), s=st.integers(1, 40), d=st.sampled_from([16, 64, 80, 128]),
       ratio=st.floats(0.0, 0.95), seed=st.integers(0, 1000))
def test_select_pack_round_trip_of_kept_values(b, h, s, d, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, h, s, d, generator=g)
    stat = torch.rand(b, h, d, generator=g) + 0.1
    kept = kept_channels(d, ratio)
    packed = select_pack_ref(keys, stat, kept)
    mask = unpack_bits(packed.kept_bits, d)
    assert torch.equal(mask.sum(-1), torch.full((b, h, s), kept))
    # Unpacking the kept values back to their channels gives the original entries exactly.
    assert torch.equal(keys[mask], packed.kept_values.reshape(-1))
    assert torch.equal(unpack_bits(packed.sign_bits, d), keys > 0)


@pytest.mark.parametrize("dtype,d,ratio,per_token", [
    (torch.bfloat16, 128, 0.5, 162), (torch.bfloat16, 128, 0.8, 86), (torch.bfloat16, 64, 0.8, 2 * 13 + 8 + 8 + 2),
    (torch.float16, 256, 0.5, 2 * 128 + 32 + 32 + 2), (torch.float32, 64, 0.5, 4 * 32 + 8 + 8 + 4),
])
def test_spark_bytes_match_spec_formula_and_allocation(dtype, d, ratio, per_token):
    b, h, s = 2, 3, 50
    keys = torch.randn(b, h, s, d).to(dtype)
    stat = window_statistic(torch.randn(b, h * 2, 32, d), h)
    packed = select_pack_ref(keys, stat, kept_channels(d, ratio))
    per_head_u = 4 * d  # float32 u_j per (b, h)
    assert packed.nbytes() == b * h * (s * per_token + per_head_u)
    values = torch.randn(b, h, s, d).to(dtype)
    ckv = CompressedKV(packed, values, torch.full((b,), s, dtype=torch.int32))
    assert ckv.nbytes() == ckv.allocated_bytes()
    assert ckv.nbytes() == packed.nbytes() + values.numel() * values.element_size() + 4 * b


def test_allocated_bytes_sees_views_of_larger_buffers():
    big = torch.randn(1, 1, 4, 100)
    view = big[..., :10]
    dense = DenseKeys(view)
    assert dense.nbytes() == 4 * 10 * 4
    assert allocated_bytes([view]) == 4 * 100 * 4  # the storage behind the view is what is really held
    with pytest.raises(ValueError, match=r"keys must be a floating-point \[B, H, S, D\]"):
        DenseKeys(big[0, 0])


def _spark(b=2, h=2, s=16, d=64, dk=20, recovery="mean", seed=0):
    gen = torch.Generator().manual_seed(seed)
    keys = torch.randn(b, h, s, d, generator=gen)
    stat = torch.rand(b, h, d, generator=gen) + 0.1
    return keys, select_pack_ref(keys, stat, dk, "code", recovery)


def test_popcount_matches_unpacked_bits():
    from sparkv.cache.layout import popcount

    words = torch.randint(-2**31, 2**31 - 1, (7, 5), dtype=torch.int64).to(torch.int32)
    assert torch.equal(popcount(words), unpack_bits(words, 160).view(7, 5, 32).sum(-1))


def test_layouts_refuse_inconsistent_fields():
    import dataclasses

    from sparkv.cache.layout import SparKKeys, ThinKKeys

    keys, layout = _spark()
    fields = {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout)}
    bits = layout.kept_bits.clone()
    bits[0, 0, 3, 0] ^= 1 << 5  # one token now marks 19 or 21 channels
    with pytest.raises(ValueError, match="exactly 20 channels"):
        SparKKeys(**{**fields, "kept_bits": bits})
    zero = _spark(recovery="zero")[1]
    with pytest.raises(ValueError, match="channels >= head_dim"):  # kept bits at channels 40..63
        SparKKeys(kept_values=zero.kept_values, kept_bits=zero.kept_bits, head_dim=40, recovery="zero")
    with pytest.raises(ValueError, match="kept_bits must be int32"):
        SparKKeys(**{**fields, "kept_bits": layout.kept_bits.long()})
    with pytest.raises(ValueError, match="kept_values must be a floating-point"):
        SparKKeys(**{**fields, "kept_values": layout.kept_values[0]})
    with pytest.raises(ValueError, match="recovery must be one of"):
        SparKKeys(**{**fields, "recovery": "bogus"})
    with pytest.raises(ValueError, match="needs u"):
        SparKKeys(**{**fields, "u": None})
    with pytest.raises(ValueError, match="constant must be"):
        SparKKeys(**{**fields, "constant": -1.0})
    idx = torch.tensor([1, 5, 9]).expand(2, 2, 3)
    kv = torch.randn(2, 2, 16, 3)
    ThinKKeys(kv, idx, 64)
    for bad in (torch.tensor([5, 1, 9]), torch.tensor([1, 5, 64]), torch.tensor([1.0, 5.0, 9.0])):
        with pytest.raises(ValueError, match="channel_idx"):
            ThinKKeys(kv, bad.expand(2, 2, 3), 64)
    values = torch.randn(2, 2, 16, 64)
    CompressedKV(layout, values, torch.tensor([16, 0]))
    ckv = CompressedKV(layout, values, torch.tensor([16, 3]))
    assert (ckv.min_length, ckv.max_length) == (3, 16)  # read once here; decode steps use these, not the tensor
    for lengths, match in ((torch.tensor([40, 10]), r"lengths must be in \[0, 16\]"),
                           (torch.tensor([-1, 10]), "lengths must be in"),
                           (torch.tensor([4.0, 2.0]), "integer"), (torch.tensor([4]), "integer")):
        with pytest.raises(ValueError, match=match):
            CompressedKV(layout, values, lengths)
    with pytest.raises(ValueError, match="must agree"):
        CompressedKV(layout, torch.randn(2, 1, 16, 64), torch.tensor([16, 16]))
    with pytest.raises(ValueError, match="share dtype"):
        CompressedKV(layout, values.half(), torch.tensor([16, 16]))
    with pytest.raises(ValueError, match="head_dim must be in"):
        unpack_bits(layout.kept_bits, 100)


# --- pages (SparKPages): the tile-major form the CUDA kernel reads ------------------------------------------------


def _prefix(b, h, s, d, dk, recovery, dtype, seed, lengths=None):
    gen = torch.Generator().manual_seed(seed)
    keys = select_pack_ref(torch.randn(b, h, s, d, generator=gen).to(dtype), torch.rand(b, h, d, generator=gen) + 0.1,
                           dk, "code", recovery, recovery_constant=0.25)
    if keys.scale is not None:
        keys.scale = keys.scale.to(dtype)
    lengths = torch.randint(0, s + 1, (b,), generator=gen, dtype=torch.int32) if lengths is None else lengths
    return CompressedKV(keys, torch.randn(b, h, s, d, generator=gen).to(dtype), lengths)


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), s=st.integers(1, 100), d=st.sampled_from([32, 64, 80, 128]),
       ratio=st.floats(0.05, 0.95), recovery=st.sampled_from(["mean", "mean_linear", "zero", "constant"]),
       dtype=st.sampled_from([torch.bfloat16, torch.float16, torch.float32]), seed=st.integers(0, 1000))
def test_pages_round_trip_exactly_and_count_their_bytes(b, h, s, d, ratio, recovery, dtype, seed):
    from sparkv.cache.layout import TILE_TOKENS, SparKPages, tile_record

    arrays = _prefix(b, h, s, d, kept_channels(d, ratio), recovery, dtype, seed)
    pages = SparKPages.from_compressed(arrays)
    back = pages.to_compressed()
    for name in ("kept_values", "kept_bits", "sign_bits", "scale", "u"):
        want, got = getattr(arrays.keys, name), getattr(back.keys, name)
        assert (want is None and got is None) or (torch.equal(got, want) and got.dtype == want.dtype), name
    assert torch.equal(back.values, arrays.values) and torch.equal(back.lengths, arrays.lengths)
    assert (back.keys.recovery, back.keys.constant) == (arrays.keys.recovery, arrays.keys.constant)
    assert (pages.batch, pages.num_heads, pages.num_tokens, pages.head_dim, pages.dtype) == \
        (b, h, s, d, dtype) and (pages.min_length, pages.max_length) == (arrays.min_length, arrays.max_length)
    # Any token range unpacks to the arrays' slice (what the PyTorch path reads block by block).
    gen = torch.Generator().manual_seed(seed)
    start = int(torch.randint(0, s, (1,), generator=gen))
    end = int(torch.randint(start, s + 1, (1,), generator=gen))
    keys, values = pages.unpack(start, end)
    assert torch.equal(values, arrays.values[:, :, start:end])
    assert torch.equal(keys.kept_values, arrays.keys.kept_values[:, :, start:end])
    assert torch.equal(keys.kept_bits, arrays.keys.kept_bits[:, :, start:end])
    # Bytes: the records (padding included), u and lengths, all really allocated; at most 128 bytes of padding per
    # record beyond the arrays' bytes per tile, plus the last tile's missing rows.
    rec = tile_record(d, arrays.keys.kept, recovery, dtype)
    tiles = -(-s // TILE_TOKENS)
    assert pages.nbytes() == pages.allocated_bytes() == b * h * tiles * rec.nbytes + arrays.lengths.nbytes + (
        0 if arrays.keys.u is None else arrays.keys.u.nbytes)
    assert arrays.nbytes() <= pages.nbytes() < arrays.nbytes() + b * h * tiles * 128 + \
        b * h * (tiles * TILE_TOKENS - s) * (rec.nbytes // TILE_TOKENS + 1)
    # Rows past the prefix and the padding are zeros: nothing left over from the allocator.
    raw = pages.pages.view(b * h, tiles, rec.nbytes)
    last = (rec.scale or rec.sign_bits or rec.kept_bits) + TILE_TOKENS * (
        dtype.itemsize if rec.scale is not None else 4 * num_words(d))
    assert not raw[..., last:].any()


def test_tile_record_fields_are_aligned_and_disjoint():
    from sparkv.cache.layout import TILE_TOKENS, tile_record

    for d in (64, 128, 256):
        for dk in (1, 13, 26, 51, 64, d):
            for recovery in ("mean", "mean_linear", "zero", "constant"):
                rec = tile_record(d, dk, recovery, torch.bfloat16)
                spans = [(rec.values, TILE_TOKENS * d * 2), (rec.kept_values, TILE_TOKENS * dk * 2),
                         (rec.kept_bits, TILE_TOKENS * d // 8), (rec.sign_bits, TILE_TOKENS * d // 8),
                         (rec.scale, TILE_TOKENS * 2)]
                spans = [(o, n) for o, n in spans if o is not None]
                assert all(o % 16 == 0 for o, _ in spans) and rec.nbytes % 128 == 0  # the kernel's 16-byte copies
                assert all(a + n <= b for (a, n), (b, _) in zip(spans, spans[1:]))
                assert spans[-1][0] + spans[-1][1] <= rec.nbytes < spans[-1][0] + spans[-1][1] + 128
                assert (rec.sign_bits is None) == (recovery == "zero")
                assert (rec.scale is None) == (recovery in ("zero", "constant"))


def test_pages_refuse_what_they_cannot_hold():
    from sparkv.cache.layout import SparKPages

    arrays = _prefix(2, 2, 40, 64, 20, "mean", torch.bfloat16, 0)
    with pytest.raises(ValueError, match="pages hold SparK keys"):
        SparKPages.from_compressed(CompressedKV(DenseKeys(arrays.values), arrays.values, arrays.lengths))
    gauss = _spark(recovery="gaussian")[1]
    with pytest.raises(ValueError, match="recovery must be one of mean, mean_linear, zero, constant for pages"):
        SparKPages.from_compressed(CompressedKV(gauss, torch.randn(2, 2, 16, 64), torch.tensor([16, 16])))
    arrays.keys.scale = arrays.keys.scale.float()
    with pytest.raises(ValueError, match="scales in the values' dtype"):
        SparKPages.from_compressed(arrays)
    pages = SparKPages.from_compressed(_prefix(2, 2, 40, 64, 20, "mean", torch.bfloat16, 0))
    fields = dict(pages.__dict__)
    fields.pop("record"), fields.pop("min_length"), fields.pop("max_length")
    with pytest.raises(ValueError, match=r"pages must be a contiguous uint8 \[4, 2, "):
        SparKPages(**{**fields, "pages": pages.pages[:, :1]})
    with pytest.raises(ValueError, match="needs u"):
        SparKPages(**{**fields, "u": None})
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 40\]"):
        SparKPages(**{**fields, "lengths": torch.tensor([41, 3], dtype=torch.int32)})
    with pytest.raises(ValueError, match="start, end must satisfy"):
        pages.unpack(10, 41)


# --- batch rows (beam search, batch slicing and repeating) ---------------------------------------------------------


def _rows_of(prefix, index):
    """Every tensor of ``prefix`` (arrays form) at rows ``index``: the expectation for ``select_rows``."""
    from dataclasses import fields

    keys = {f.name: getattr(prefix.keys, f.name) for f in fields(prefix.keys)}
    return {name: (t[index] if isinstance(t, torch.Tensor) else t) for name, t in keys.items()}, \
        prefix.values[index], prefix.lengths[index]


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 4), h=st.integers(1, 3), s=st.integers(1, 70), d=st.sampled_from([32, 64, 80]),
       ratio=st.floats(0.05, 0.95), recovery=st.sampled_from(["mean", "mean_linear", "zero", "constant", "gaussian"]),
       rows=st.lists(st.integers(0, 3), min_size=0, max_size=6), seed=st.integers(0, 1000))
def test_select_rows_takes_exactly_those_rows_in_both_forms(b, h, s, d, ratio, recovery, rows, seed):
    """Arrays and pages: the rows asked for (any order, repeats, none), every field, lengths read again."""
    from sparkv.cache.layout import SparKPages, select_rows

    prefix = _prefix(b, h, s, d, kept_channels(d, ratio), recovery, torch.bfloat16, seed)
    index = torch.tensor([r % b for r in rows], dtype=torch.long)
    got = select_rows(prefix, index)
    keys, values, lengths = _rows_of(prefix, index)
    assert type(got.keys) is type(prefix.keys) and got.batch == len(rows)
    for name, want in keys.items():
        have = getattr(got.keys, name)
        assert (torch.equal(have, want) and have.dtype == want.dtype) if isinstance(want, torch.Tensor) \
            else have == want, name
    assert torch.equal(got.values, values) and torch.equal(got.lengths, lengths)
    if len(rows):
        assert (got.min_length, got.max_length) == (int(lengths.min()), int(lengths.max()))
    assert got.nbytes() == got.allocated_bytes()  # compact copies, not views into the old rows
    if recovery != "gaussian":  # pages hold the deterministic recoveries
        pages = select_rows(SparKPages.from_compressed(prefix), index)
        assert isinstance(pages, SparKPages) and pages.batch == len(rows)
        assert torch.equal(pages.pages, SparKPages.from_compressed(got).pages)
        assert torch.equal(pages.lengths, lengths) and pages.nbytes() == pages.allocated_bytes()
        assert pages.to_compressed().batch == len(rows)  # readable, with no rows too


def test_select_rows_of_dense_and_think_keys_and_bad_indices():
    from sparkv.cache.layout import ThinKKeys, select_rows

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, 2, 10, 16, generator=gen)
    dense = CompressedKV(DenseKeys(torch.randn(3, 2, 10, 16, generator=gen)), values, torch.tensor([10, 4, 7]))
    idx = torch.tensor(list(range(16)), dtype=torch.int16).view(1, 1, 16)[..., ::2].expand(3, 2, 8).contiguous()
    think = CompressedKV(ThinKKeys(torch.randn(3, 2, 10, 8, generator=gen), idx, 16), values, torch.tensor([10, 4, 7]))
    order = torch.tensor([2, 2, 0])
    for prefix in (dense, think):
        got = select_rows(prefix, order)
        for name in ("keys", "kept_values", "channel_idx"):
            if hasattr(prefix.keys, name):
                assert torch.equal(getattr(got.keys, name), getattr(prefix.keys, name)[order]), name
        assert got.lengths.tolist() == [7, 7, 10] and (got.min_length, got.max_length) == (7, 10)
    for bad, match in ((torch.tensor([3]), r"index must hold rows in \[0, 3\)"), (torch.tensor([-1]), r"\[0, 3\)"),
                       (torch.tensor([0.0]), "index must be a 1-D tensor"), (torch.tensor([[0]]), "1-D tensor"),
                       (torch.tensor([True, False]), "must cover the 3 batch rows, got 2"), ("01", "1-D tensor")):
        with pytest.raises(ValueError, match=match):
            select_rows(dense, bad)
    # A boolean mask and a list select too.
    assert select_rows(dense, torch.tensor([True, False, True])).lengths.tolist() == [10, 7]
    assert select_rows(dense, [1]).lengths.tolist() == [4]
