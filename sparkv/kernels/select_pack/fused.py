"""Triton ``select_pack``: dense keys + window statistic -> the SparK layout in one pass over the keys.

One program takes ``BS`` tokens of one (b, h) and holds their keys as a ``[BS, NWP, 32]`` register tile (channel
``j = 32·w + i`` sits at ``[:, w, i]``, so a word of the bitmaps is one row of the last axis). Per token:

1. saliency ``s_j = a_j·K_j²`` (``code``) or ``a_j·|K_j|`` (``paper``) in float32, exactly as the reference
   computes it; ``s >= 0``, so its float32 bit pattern read as int32 orders like the value;
2. the DK-th largest pattern by bisection on the 31 value bits (``thr`` = largest x with ``#{s >= x} >= DK``);
3. kept = ``s > thr`` plus the first ``DK - #{s > thr}`` channels with ``s == thr`` in channel order (the lower
   index wins a tie, as ``torch.sort(stable=True)`` in the reference);
4. each kept entry is stored at its rank (exclusive count of kept channels before it) in ``kept_values``; the
   bitmaps are sums of ``bit << i`` over the last axis; the scale is the pruned mean (fp32 sum, then cast).

Exact vs ``select_pack_ref``: ``kept_bits``, ``sign_bits`` and ``kept_values`` bit for bit; ``scale`` to float
rounding (the fp32 sum runs in another order); ``u`` is computed by the same PyTorch expression.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkv.cache.layout import SparKKeys, num_words
from sparkv.kernels.autotune import autotune, cdiv, launch_device, next_power_of_2

SALIENCY_IDS = {"code": 0, "paper": 1}
RECOVERY_IDS = {"mean": 0, "mean_linear": 1, "zero": 2, "constant": 3}


@autotune(
    configs=[
        triton.Config({"BS": 16}, num_warps=4),
        triton.Config({"BS": 32}, num_warps=4),
        triton.Config({"BS": 32}, num_warps=8),
        triton.Config({"BS": 64}, num_warps=8),
    ],
    key=["D", "DK", "SALIENCY", "RECOVERY"],
    interpret_config=triton.Config({"BS": 16}, num_warps=4),
)
@triton.jit(do_not_specialize=["S"])
def select_pack_fwd_kernel(
    k,  # [B, H, S, D] keys, model dtype, last stride 1
    a,  # [B, H, D] float32 window statistic (> 0)
    kv,  # [B, H, S, DK] out: kept values
    kb,  # [B, H, S, NW] out: kept bitmap
    sb,  # [B, H, S, NW] out: sign bitmap (unused when RECOVERY == zero)
    r,  # [B, H, S] out: scale (unused unless RECOVERY is mean / mean_linear)
    S,
    s_kb, s_kh, s_ks,
    H: tl.constexpr,
    D: tl.constexpr,
    DK: tl.constexpr,
    NW: tl.constexpr,
    NWP: tl.constexpr,
    NP: tl.constexpr,
    SALIENCY: tl.constexpr,
    RECOVERY: tl.constexpr,
    BS: tl.constexpr,
):
    i_s, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_bh64 = i_bh.to(tl.int64)

    o_t = i_s * BS + tl.arange(0, BS)
    o_w = tl.arange(0, NWP)
    o_i = tl.arange(0, 32)
    o_j = o_w[:, None] * 32 + o_i[None, :]  # [NWP, 32] channel index
    m_t = o_t < S
    m_j = o_j < D
    m_tj = m_t[:, None, None] & m_j[None, :, :]

    p_k = k + i_b.to(tl.int64) * s_kb + i_h.to(tl.int64) * s_kh + o_t[:, None, None].to(tl.int64) * s_ks + o_j[None]
    b_kraw = tl.load(p_k, mask=m_tj, other=0)
    b_k = b_kraw.to(tl.float32)
    b_a = tl.load(a + i_bh64 * D + o_j, mask=m_j, other=0)[None, :, :]
    if SALIENCY == 0:
        b_sal = b_a * (b_k * b_k)
    else:
        b_sal = b_a * tl.abs(b_k)
    # Non-negative float32 patterns order like their values; padding channels get -1 and are never kept.
    b_bits = tl.where(m_j[None, :, :], b_sal.to(tl.int32, bitcast=True), -1)

    # DK-th largest pattern per token: bisection on the 31 value bits, most significant first.
    b_thr = tl.zeros([BS], dtype=tl.int32)
    for i in range(31):
        b_cand = b_thr | (1 << (30 - i))
        b_cnt = tl.sum(tl.sum((b_bits >= b_cand[:, None, None]).to(tl.int32), axis=2), axis=1)
        b_thr = tl.where(b_cnt >= DK, b_cand, b_thr)

    # Ties at the threshold: keep the first (DK - #greater) of them in channel order.
    m_gt = b_bits > b_thr[:, None, None]
    b_eq = (b_bits == b_thr[:, None, None]).to(tl.int32)
    b_need = DK - tl.sum(tl.sum(m_gt.to(tl.int32), axis=2), axis=1)
    b_eq_w = tl.sum(b_eq, axis=2)
    b_eq_rank = tl.cumsum(b_eq, axis=2) + (tl.cumsum(b_eq_w, axis=1) - b_eq_w)[:, :, None]
    m_keep = m_gt | ((b_eq != 0) & (b_eq_rank <= b_need[:, None, None]))

    # Rank of each kept channel among the kept ones = its slot in kept_values.
    b_keep = m_keep.to(tl.int32)
    b_keep_w = tl.sum(b_keep, axis=2)
    b_pos = tl.cumsum(b_keep, axis=2) - b_keep + (tl.cumsum(b_keep_w, axis=1) - b_keep_w)[:, :, None]
    p_kv = kv + i_bh64 * S * DK + o_t[:, None, None].to(tl.int64) * DK + b_pos
    tl.store(p_kv, b_kraw.to(kv.dtype.element_ty), mask=m_keep & m_t[:, None, None])

    p_w = i_bh64 * S * NW + o_t[:, None].to(tl.int64) * NW + o_w[None, :]
    m_w = m_t[:, None] & (o_w < NW)[None, :]
    tl.store(kb + p_w, tl.sum(b_keep << o_i[None, None, :], axis=2), mask=m_w)
    if RECOVERY != 2:
        b_sign = (b_k > 0).to(tl.int32)
        tl.store(sb + p_w, tl.sum(b_sign << o_i[None, None, :], axis=2), mask=m_w)

    if RECOVERY < 2:
        m_pruned = (~m_keep) & m_j[None, :, :]
        if RECOVERY == 0:
            b_x = b_sal
        else:
            b_x = b_a * tl.abs(b_k)
        b_mean = tl.sum(tl.sum(tl.where(m_pruned, b_x, 0.0), axis=2), axis=1) / NP
        if RECOVERY == 0:
            b_mean = tl.sqrt(b_mean)
        tl.store(r + i_bh64 * S + o_t, b_mean.to(r.dtype.element_ty), mask=m_t)


def select_pack_triton(
    keys: torch.Tensor,
    stat: torch.Tensor,
    kept: int,
    saliency: str = "code",
    recovery: str = "mean",
    recovery_constant: float = 0.01,
    seed: int = 0,
) -> SparKKeys:
    """Triton version of :func:`sparkv.kernels.select_pack.reference.select_pack_ref` (same arguments and result).

    Args:
        keys: ``[B, H, S, D]`` post-RoPE keys (fp16 / bf16 / fp32); any strides with a unit last stride.
        stat: ``[B, H, D]`` float32 window statistic, strictly positive (``window_statistic`` clamps it).
        kept: DK in ``[1, D]``.
        saliency: ``"code"`` or ``"paper"``.
        recovery: ``"mean"``, ``"mean_linear"``, ``"zero"`` or ``"constant"`` (the sampled recoveries are
            served by the reference).

    Returns:
        :class:`SparKKeys` with freshly allocated compact tensors.
    """
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H, S, D], got {tuple(keys.shape)}")
    b, h, s, d = keys.shape
    if stat.shape != (b, h, d):
        raise ValueError(f"stat must be [{b}, {h}, {d}], got {tuple(stat.shape)}")
    if not isinstance(kept, int) or isinstance(kept, bool) or not 1 <= kept <= d:
        raise ValueError(f"kept channels must be an integer in [1, {d}], got {kept!r}")
    if saliency not in SALIENCY_IDS:
        raise ValueError(f"saliency must be 'code' or 'paper', got {saliency!r}")
    if recovery not in RECOVERY_IDS:
        raise ValueError(f"recovery must be one of {', '.join(RECOVERY_IDS)} for the Triton kernel; got {recovery!r}")
    if keys.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"keys must be fp16, bf16 or fp32, got {keys.dtype}")
    if keys.stride(-1) != 1:
        keys = keys.contiguous()
    a = stat.float().contiguous()
    nw = num_words(d)
    nwp = next_power_of_2(nw)
    dev = keys.device
    kept_values = torch.empty(b, h, s, kept, dtype=keys.dtype, device=dev)
    kept_bits = torch.empty(b, h, s, nw, dtype=torch.int32, device=dev)
    rid = RECOVERY_IDS[recovery]
    sign_bits = torch.empty_like(kept_bits) if recovery != "zero" else None
    scale = torch.empty(b, h, s, dtype=keys.dtype, device=dev) if rid < 2 else None
    if s > 0:
        def grid(meta):
            return (cdiv(s, meta["BS"]), b * h)

        with launch_device(dev):  # Triton launches on the current device (a model may span GPUs)
            select_pack_fwd_kernel[grid](
                keys, a, kept_values, kept_bits, sign_bits if sign_bits is not None else kept_bits,
                scale if scale is not None else kept_values, s,
                keys.stride(0), keys.stride(1), keys.stride(2),
                H=h, D=d, DK=kept, NW=nw, NWP=nwp, NP=max(d - kept, 1), SALIENCY=SALIENCY_IDS[saliency], RECOVERY=rid,
            )
    layout = dict(kept_values=kept_values, kept_bits=kept_bits, head_dim=d, recovery=recovery, seed=seed)
    if sign_bits is not None:
        layout["sign_bits"] = sign_bits
    if recovery == "mean":
        layout.update(scale=scale, u=a.rsqrt())
    elif recovery == "mean_linear":
        layout.update(scale=scale, u=a.reciprocal())
    elif recovery == "constant":
        layout["constant"] = float(recovery_constant)
    return SparKKeys(**layout)


__all__ = ["select_pack_triton", "select_pack_fwd_kernel"]
