"""The core correctness chain of the PyTorch path (spec §3):

1. recovered keys equal the spec formulas computed from the dense keys;
2. blockwise attention over the compressed layout equals attention over the materialised K̂ (the oracle);
3. at λ = 0 it equals dense attention.
"""

import math

import pytest
import torch

from sparkv.cache.layout import CompressedKV, DenseKeys, unpack_bits
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.recover.reference import recover_ref
from sparkv.kernels.select_pack.reference import select_pack_ref
from sparkv.methods.spark import window_statistic

RECOVERIES = ["mean", "mean_linear", "zero", "constant", "gaussian", "exponential"]


def oracle_attention(query, keys, values, key_valid, scaling, causal_tail=0):
    """Softmax attention over materialised keys ``[B, H, S, D]``; ``key_valid [B, S]``; last ``causal_tail`` causal."""
    b, hq, nq, d = query.shape
    g = hq // keys.shape[1]
    k = keys.float().repeat_interleave(g, 1)
    v = values.float().repeat_interleave(g, 1)
    scores = (query.float() @ k.transpose(-1, -2)) * scaling
    mask = key_valid[:, None, None, :].expand(b, hq, nq, keys.shape[2]).clone()
    s_total = keys.shape[2]
    for i in range(nq):
        mask[:, :, i, s_total - nq + i + 1:] = False
    scores = scores.masked_fill(~mask, -math.inf)
    return scores.softmax(-1) @ v


def spec_recovered_keys(keys, stat, kept, saliency, recovery, c=0.01):
    """K̂ straight from the spec's formulas (no layout involved)."""
    k = keys.float()
    a = stat[:, :, None, :]
    s = a * k.square() if saliency == "code" else a * k.abs()
    order = torch.sort(s, dim=-1, descending=True, stable=True).indices
    kept_mask = torch.zeros_like(k, dtype=torch.bool).scatter_(-1, order[..., :kept], True)
    pruned = ~kept_mask
    n_p = pruned.sum(-1, keepdim=True).clamp_min(1)
    sign = torch.where(k > 0, 1.0, -1.0)
    if recovery == "mean":
        rec = sign * torch.sqrt(((s * pruned).sum(-1, keepdim=True) / n_p) / a)
    elif recovery == "mean_linear":
        rec = sign * ((a * k.abs() * pruned).sum(-1, keepdim=True) / n_p) / a
    elif recovery == "constant":
        rec = sign * c
    else:
        rec = torch.zeros_like(k)
    return torch.where(kept_mask, k, rec), kept_mask


@pytest.mark.parametrize("saliency", ["code", "paper"])
@pytest.mark.parametrize("recovery", ["mean", "mean_linear", "zero", "constant"])
@pytest.mark.parametrize("d,ratio", [(64, 0.5), (128, 0.8), (256, 0.1)])
def test_recovered_keys_equal_spec_formula(saliency, recovery, d, ratio):
    torch.manual_seed(d)
    keys = torch.randn(2, 2, 33, d)
    stat = window_statistic(torch.randn(2, 6, 32, d), 2)
    kept = kept_channels(d, ratio)
    packed = select_pack_ref(keys, stat, kept, saliency=saliency, recovery=recovery)
    expected, kept_mask = spec_recovered_keys(keys, stat, kept, saliency, recovery)
    assert torch.equal(unpack_bits(packed.kept_bits, d), kept_mask)
    torch.testing.assert_close(recover_ref(packed), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("b,g", [(1, 1), (3, 3), (2, 8)])
def test_compressed_attention_equals_oracle(dtype, d, ratio, b, g):
    torch.manual_seed(hash((d, b, g)) % 2**31)
    h, s, st, nq = 2, 77, 3, 1
    keys = torch.randn(b, h, s, d).to(dtype)
    values = torch.randn(b, h, s, d).to(dtype)
    stat = window_statistic(torch.randn(b, h * g, 32, d), h)
    packed = select_pack_ref(keys, stat, kept_channels(d, ratio))
    lengths = torch.tensor([s - 11 * i for i in range(b)], dtype=torch.int32)
    tail_k = torch.randn(b, h, st, d).to(dtype)
    tail_v = torch.randn(b, h, st, d).to(dtype)
    query = torch.randn(b, h * g, nq, d).to(dtype)
    out = decode_attn_ref(query, CompressedKV(packed, values, lengths), tail_k, tail_v, d**-0.5, block_size=32)
    k_hat = torch.cat([recover_ref(packed), tail_k.float()], 2)
    v_all = torch.cat([values, tail_v], 2)
    valid = torch.ones(b, s + st, dtype=torch.bool)
    for i in range(b):
        valid[i, lengths[i]:s] = False
    expected = oracle_attention(query, k_hat, v_all, valid, d**-0.5)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(out.float(), expected, **tol)


@pytest.mark.parametrize("recovery", RECOVERIES)
def test_every_recovery_attends_like_its_oracle_with_multi_token_queries(recovery):
    torch.manual_seed(3)
    b, h, g, s, d, st, nq = 2, 2, 3, 40, 64, 6, 4
    keys, values = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    packed = select_pack_ref(keys, window_statistic(torch.randn(b, h * g, 32, d), h), 20, recovery=recovery)
    tail_k, tail_v = torch.randn(b, h, st, d), torch.randn(b, h, st, d)
    query = torch.randn(b, h * g, nq, d)
    lengths = torch.tensor([s, 25], dtype=torch.int32)
    out = decode_attn_ref(query, CompressedKV(packed, values, lengths), tail_k, tail_v, 0.125, block_size=16)
    valid = torch.ones(b, s + st, dtype=torch.bool)
    valid[1, 25:s] = False
    expected = oracle_attention(query, torch.cat([recover_ref(packed), tail_k], 2), torch.cat([values, tail_v], 2),
                                valid, 0.125)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [64, 128])
def test_ratio_zero_equals_dense_attention(d):
    torch.manual_seed(1)
    b, h, g, s = 2, 2, 4, 50
    keys, values = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    packed = select_pack_ref(keys, window_statistic(torch.randn(b, h * g, 32, d), h), kept_channels(d, 0.0))
    assert torch.equal(recover_ref(packed), keys)
    query = torch.randn(b, h * g, 1, d)
    lengths = torch.full((b,), s, dtype=torch.int32)
    out = decode_attn_ref(query, CompressedKV(packed, values, lengths), None, None, d**-0.5)
    dense = decode_attn_ref(query, CompressedKV(DenseKeys(keys), values, lengths), None, None, d**-0.5)
    sdpa = torch.nn.functional.scaled_dot_product_attention(query, keys, values, scale=d**-0.5, enable_gqa=True)
    torch.testing.assert_close(out, dense, rtol=0, atol=0)
    torch.testing.assert_close(out, sdpa, rtol=1e-6, atol=1e-6)
