"""``select_pack_triton`` vs ``select_pack_ref``: bitmaps and kept values bit for bit, scale to float rounding.

CPU: the kernel runs in the Triton interpreter (tests/conftest.py sets ``TRITON_INTERPRET=1``), small shapes.
GPU (``gpu`` marker): the same checks at full shapes.
"""

from __future__ import annotations

import pytest
import torch

from sparkv.config import kept_channels
from sparkv.kernels.select_pack import select_pack
from sparkv.kernels.select_pack.fused import select_pack_triton
from sparkv.kernels.select_pack.reference import select_pack_ref

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# One ulp of the stored scale (its fp32 sum runs in another order than the reference's).
SCALE_RTOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3, torch.float32: 1e-5}


def make_inputs(b, h, s, d, dtype, seed=0, ties=False):
    g = torch.Generator(device="cpu").manual_seed(seed)
    if ties:
        # Small integers: many equal saliencies in a token, so the tie rule decides.
        keys = torch.randint(-3, 4, (b, h, s, d), generator=g).to(dtype)
        stat = torch.ones(b, h, d)
        stat[..., ::3] = 2.0
    else:
        keys = torch.randn(b, h, s, d, generator=g).to(dtype)
        stat = torch.rand(b, h, d, generator=g) + 0.05
    return keys.to(DEVICE), stat.to(DEVICE)


def check(tri, ref):
    assert tri.head_dim == ref.head_dim and tri.recovery == ref.recovery
    assert torch.equal(tri.kept_bits, ref.kept_bits), "kept_bits differ"
    assert torch.equal(tri.kept_values, ref.kept_values), "kept_values differ"
    if ref.sign_bits is None:
        assert tri.sign_bits is None
    else:
        assert torch.equal(tri.sign_bits, ref.sign_bits), "sign_bits differ"
    if ref.scale is None:
        assert tri.scale is None
    else:
        assert not torch.isnan(tri.scale).any()
        torch.testing.assert_close(tri.scale.float(), ref.scale.float(), rtol=SCALE_RTOL[ref.scale.dtype], atol=1e-6)
    if ref.u is None:
        assert tri.u is None
    else:
        assert torch.equal(tri.u, ref.u)
    assert tri.constant == ref.constant
    assert tri.nbytes() == ref.nbytes()


CASES = [
    # (B, H, S, D, DK)
    (1, 1, 1, 64, 13),
    (2, 2, 63, 64, 32),
    (1, 3, 200, 128, 26),
    (2, 1, 63, 128, 64),
    (1, 2, 63, 256, 128),
    (1, 1, 20, 100, 50),  # odd head_dim: padded words
]


@pytest.mark.interpret
@pytest.mark.parametrize("dk", [26, 64])
@pytest.mark.parametrize("saliency", ["code", "paper"])
@pytest.mark.parametrize("recovery", ["mean", "mean_linear", "zero", "constant"])
def test_select_pack_recoveries(saliency, recovery, dk, poison_empty):
    # Random keys, λ = 0.8 and 0.5: at DK = 64 the kept boundary falls where saliencies are close, so a kernel that
    # rounds them (to fp16, say) keeps other channels for a few of these 252 tokens.
    keys, stat = make_inputs(2, 2, 63, 128, torch.bfloat16, seed=1)
    check(select_pack_triton(keys, stat, dk, saliency, recovery), select_pack_ref(keys, stat, dk, saliency, recovery))


@pytest.mark.parametrize("b,h,s,d,dk", CASES, ids=[f"B{b}-H{h}-S{s}-D{d}-DK{dk}" for b, h, s, d, dk in CASES])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=["bf16", "fp16", "fp32"])
def test_select_pack_shapes(b, h, s, d, dk, dtype, poison_empty):
    keys, stat = make_inputs(b, h, s, d, dtype, seed=s + d)
    check(select_pack_triton(keys, stat, dk), select_pack_ref(keys, stat, dk))


@pytest.mark.parametrize("saliency", ["code", "paper"])
@pytest.mark.parametrize("dk", [1, 13, 64])
def test_select_pack_ties_lower_index_wins(saliency, dk, poison_empty):
    keys, stat = make_inputs(1, 2, 50, 64, torch.bfloat16, seed=3, ties=True)
    check(select_pack_triton(keys, stat, dk, saliency), select_pack_ref(keys, stat, dk, saliency))


def test_select_pack_all_kept_and_strided_keys(poison_empty):
    # λ = 0 (DK = D) and keys that are a transposed view, as the attention layer hands them over.
    keys, stat = make_inputs(1, 3, 40, 64, torch.bfloat16, seed=5)
    view = keys.transpose(1, 2).contiguous().transpose(1, 2)
    assert not view.is_contiguous()
    check(select_pack_triton(view, stat, 64), select_pack_ref(keys, stat, 64))
    check(select_pack_triton(view, stat, kept_channels(64, 0.8)), select_pack_ref(keys, stat, kept_channels(64, 0.8)))


def test_select_pack_dispatch_and_errors():
    keys, stat = make_inputs(1, 1, 8, 64, torch.bfloat16)
    out = select_pack(keys, stat, 13, backend="triton")
    check(out, select_pack_ref(keys, stat, 13))
    with pytest.raises(ValueError, match="kept channels"):
        select_pack_triton(keys, stat, 65)
    with pytest.raises(ValueError, match="recovery"):
        select_pack_triton(keys, stat, 13, recovery="gaussian")
    with pytest.raises(ValueError, match="stat"):
        select_pack_triton(keys, stat[..., :32], 13)


@pytest.mark.gpu
@pytest.mark.parametrize("d,lam", [(64, 0.5), (64, 0.8), (128, 0.5), (128, 0.8), (256, 0.5)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_select_pack_gpu_full(d, lam, dtype, poison_empty):
    keys, stat = make_inputs(2, 8, 4096, d, dtype, seed=d)
    dk = kept_channels(d, lam)
    check(select_pack_triton(keys, stat, dk), select_pack_ref(keys, stat, dk))


@pytest.mark.gpu
@pytest.mark.parametrize("saliency", ["code", "paper"])
@pytest.mark.parametrize("recovery", ["mean_linear", "zero", "constant"])
def test_select_pack_gpu_recoveries(saliency, recovery, poison_empty):
    keys, stat = make_inputs(2, 8, 4096, 128, torch.bfloat16, seed=7)
    check(select_pack_triton(keys, stat, 26, saliency, recovery), select_pack_ref(keys, stat, 26, saliency, recovery))


@pytest.mark.gpu
def test_select_pack_gpu_ties(poison_empty):
    keys, stat = make_inputs(2, 8, 4096, 128, torch.bfloat16, ties=True)
    check(select_pack_triton(keys, stat, 26), select_pack_ref(keys, stat, 26))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_select_pack_refuses_a_statistic_that_is_not_positive_and_finite(bad):
    from sparkv.kernels.select_pack import select_pack

    keys = torch.randn(1, 1, 4, 64)
    stat = torch.rand(1, 1, 64) + 0.1
    stat[0, 0, 5] = bad
    with pytest.raises(ValueError, match="stat must be finite and > 0"):
        select_pack(keys, stat, 32, backend="torch")

