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
