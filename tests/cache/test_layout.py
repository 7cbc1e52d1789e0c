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
    big = torch.randn(4, 100)
    view = big[:, :10]
    dense = DenseKeys(view)
    assert dense.nbytes() == 4 * 10 * 4
    assert allocated_bytes([view]) == 4 * 100 * 4  # the storage behind the view is what is really held
