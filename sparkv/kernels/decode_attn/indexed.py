"""EXPERIMENT: decode attention over an *indexed* SparK layout, where the rebuild work scales with the T kept entries
instead of the D channels (BENCHMARKS.md, "Session 4"). Not wired into the cache; measured by
``benchmarks/ab_decode.py --indexed``.

Layout (derived from :class:`SparKKeys` by :func:`to_indexed`; ``mean`` / ``mean_linear`` recovery):
    idx        [B, H, S, T] uint8   channel of each kept entry, ascending (the spec's "T indices instead of a bitmap")
    residual   [B, H, S, T] dtype   K[t, idx] - r_t·sign[t, idx]·u[idx]: the kept value minus its recovered value
    sign_bits  [B, H, S, NW] int32  as in SparKKeys, read at every channel
    scale, u                        as in SparKKeys
Because the recovered key is ``r_t·sign_j·u_j`` at every channel plus the residual at kept ones,

    score_t = r_t · Σ_j sign[t, j]·(q ⊙ u)_j  +  Σ_i residual[t, i] · q[idx[t, i]]

The first sum is a tensor-core dot with an unmasked ±1 tile (no kept test, no rank); the second is T gathers of q
(all G ≤ 4 query heads of the group packed in one 8-byte word per channel, ``q4``) and FMAs on the CUDA cores.
Bytes per (token, KV head) at D = 128, bf16: 3T + 16 + 2 (λ = 0.8: 96 B; the bitmap layout: 86 B).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sparkv.cache.layout import CompressedKV, SparKKeys, num_words, unpack_bits
from sparkv.kernels.autotune import interpreting
from sparkv.kernels.decode_attn.fused import LOG2E, _absorb, _choose_chunk, decode_attn_combine_kernel


def to_indexed(keys: SparKKeys) -> dict[str, torch.Tensor]:
    """The indexed layout of ``keys`` (``mean`` / ``mean_linear`` recovery)."""
    if keys.recovery not in ("mean", "mean_linear"):
        raise ValueError(f"the indexed layout covers recovery 'mean' / 'mean_linear', got {keys.recovery!r}")
    d = keys.head_dim
    if d > 256:
        raise ValueError(f"uint8 channel indices need head_dim <= 256, got {d}")
    kept = unpack_bits(keys.kept_bits, d)
    idx = kept.to(torch.int16).argsort(dim=-1, descending=True, stable=True)[..., : keys.kept].sort(dim=-1).values
    positive = unpack_bits(keys.sign_bits, d).gather(-1, idx)
    sign = positive.float() * 2 - 1
    u = keys.u.float().unsqueeze(2).expand(-1, -1, idx.shape[2], -1).gather(-1, idx)
    residual = keys.kept_values.float() - keys.scale.float().unsqueeze(-1) * sign * u
    return dict(idx=idx.to(torch.uint8).contiguous(), residual=residual.to(keys.kept_values.dtype).contiguous(),
                sign_bits=keys.sign_bits.contiguous(), scale=keys.scale.contiguous(), u=keys.u.float().contiguous())


def pack_queries(query: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """``q4 [B, H, D]`` int64: the G ≤ 4 query heads of each group at each channel as four bf16 (fp32: four
    bf16-rounded copies are not exact, so the interpreter path packs bf16 too)."""
    b, hq, _, d = query.shape
    g = hq // num_kv_heads
    if g > 4:
        raise ValueError(f"the experiment packs at most 4 query heads per KV head, got {g}")
    q = query.view(b, num_kv_heads, g, d).to(torch.bfloat16)
    q = torch.nn.functional.pad(q, (0, 0, 0, 4 - g))
    return q.permute(0, 1, 3, 2).contiguous().view(torch.int64).view(b, num_kv_heads, d)


@triton.jit(do_not_specialize=["S", "CHUNK", "NS"])
def decode_indexed_fwd_kernel(
    q, q4, rsd, kidx, sb, r, u, v, lens, o_part, lse_part, scale,
    S, CHUNK, NS,
    s_v_b, s_v_h, s_v_s,
    H: tl.constexpr, G: tl.constexpr, BG: tl.constexpr, D: tl.constexpr, BD: tl.constexpr, NW: tl.constexpr,
    NWP: tl.constexpr, T: tl.constexpr, BT: tl.constexpr, F32: tl.constexpr, BS: tl.constexpr,
):
    i_s, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    o_g = tl.arange(0, BG)
    o_j = tl.arange(0, BD)
    o_w = tl.arange(0, NWP)
    o_b = tl.arange(0, 32)
    o_i = tl.arange(0, BT)
    m_g = o_g < G
    m_j = o_j < D
    m_w = o_w < NW
    m_i = o_i < T

    # q ⊙ u in the sign tile's channel order c = bit·NWP + word (channel j = word·32 + bit), as fused.EXPAND_PTX.
    o_jq = (o_j % NWP) * 32 + o_j // NWP
    m_jq = o_jq < D
    p_q = q + (i_b64 * (H * G) + i_h * G + o_g[:, None]) * D
    b_qs = tl.load(p_q + o_jq[None, :], mask=m_g[:, None] & m_jq[None, :], other=0).to(tl.float32)
    b_qu = b_qs * tl.load(u + i_bh64 * D + o_jq, mask=m_jq, other=0)[None, :]
    if not F32:
        b_qu = b_qu.to(tl.bfloat16)
    b_bit = (1 << o_b)[:, None, None]

    b_m = tl.full([BG], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BG], dtype=tl.float32)
    b_acc = tl.zeros([BG, BD], dtype=tl.float32)
    start = i_s * CHUNK
    end = tl.minimum(start + CHUNK, tl.load(lens + i_b))
    p_v0 = v + i_b64 * s_v_b + i_h64 * s_v_h
    for t0 in range(start, end, BS):
        o_t = t0 + tl.arange(0, BS)
        m_t = o_t < end
        o_t64 = o_t.to(tl.int64)
        # Kept part on the CUDA cores: Σ_i residual[t, i]·q_g[idx[t, i]] for each query head g of the group.
        p_i = i_bh64 * S * T + o_t64[:, None] * T + o_i[None, :]
        m_ti = m_t[:, None] & m_i[None, :]
        b_idx = tl.load(kidx + p_i, mask=m_ti, other=0).to(tl.int32)
        b_rs = tl.load(rsd + p_i, mask=m_ti, other=0).to(tl.float32)
        b_w = tl.load(q4 + i_bh64 * D + b_idx, mask=m_ti, other=0)
        b_sk = tl.zeros([BG, BS], dtype=tl.float32)
        for g in tl.static_range(G):
            b_qg = (((b_w >> (16 * g)) & 0xFFFF) << 16).to(tl.int32).to(tl.float32, bitcast=True)
            b_sk = tl.where(o_g[:, None] == g, tl.sum(b_rs * b_qg, axis=1)[None, :], b_sk)
        # Recovered part on the tensor cores: r_t·((q ⊙ u) · Sgnᵀ) with Sgn = ±1 at every channel.
        p_w = i_bh64 * S * NW + o_t64[:, None] * NW + o_w[None, :]
        b_sw = tl.load(sb + p_w, mask=m_t[:, None] & m_w[None, :], other=0)
        b_sgn = tl.where((b_sw[None, :, :] & b_bit) != 0, 1.0, -1.0)
        if not F32:
            b_sgn = b_sgn.to(tl.bfloat16)
        b_sgn = tl.reshape(tl.permute(b_sgn, (1, 0, 2)), (BS, BD))
        b_r = tl.load(r + i_bh64 * S + o_t, mask=m_t, other=0).to(tl.float32)
        b_s = (tl.dot(b_qu, tl.trans(b_sgn)) * b_r[None, :] + b_sk) * scale
        b_s = tl.where(m_t[None, :], b_s, float("-inf"))
        b_v = tl.load(p_v0 + o_t64[:, None] * s_v_s + o_j[None, :], mask=m_t[:, None] & m_j[None, :], other=0)
        if F32:
            b_v = b_v.to(tl.float32)
        b_m, b_l, b_acc = _absorb(b_s, b_v, b_m, b_l, b_acc)

    m_nonempty = b_l > 0
    b_ls = tl.where(m_nonempty, b_l, 1.0)
    b_lse = tl.where(m_nonempty, b_m + tl.log2(b_ls), float("-inf"))
    p_o = o_part + ((i_bh64 * NS + i_s) * G + o_g[:, None]) * D + o_j[None, :]
    tl.store(p_o, b_acc / b_ls[:, None], mask=m_g[:, None] & m_j[None, :])
    tl.store(lse_part + (i_bh64 * NS + i_s) * G + o_g, b_lse, mask=m_g)


def decode_attn_indexed(query: torch.Tensor, layout: dict[str, torch.Tensor], values: torch.Tensor,
                        lengths: torch.Tensor, scaling: float, config: dict | None = None,
                        chunk: int | None = None) -> torch.Tensor:
    """One-token decode over a prefix in the indexed layout (:func:`to_indexed`); no dense tail (experiment)."""
    b, hq, nq, d = query.shape
    h = values.shape[1]
    g = hq // h
    if nq != 1 or g > 4:
        raise ValueError("the experiment covers one query token and at most 4 query heads per KV head")
    interp = interpreting()
    s, t = layout["idx"].shape[2], layout["idx"].shape[3]
    cfg = dict(config or {})
    bs = cfg.pop("BS", 16 if interp else 32)
    align = 32 if interp else 256
    chunk = chunk or _choose_chunk(s, b * h, query.device, align, 8)
    ns = triton.cdiv(s, chunk)
    o_part = torch.empty(b * h, ns, g, d, dtype=torch.float32, device=query.device)
    lse_part = torch.empty(b * h, ns, g, dtype=torch.float32, device=query.device)
    q = query.contiguous()
    v = values if values.stride(-1) == 1 else values.contiguous()
    nw = num_words(d)
    decode_indexed_fwd_kernel[(ns, b * h)](
        q, pack_queries(q, h), layout["residual"], layout["idx"], layout["sign_bits"], layout["scale"], layout["u"],
        v, lengths.to(device=query.device, dtype=torch.int32), o_part, lse_part, float(scaling) * LOG2E,
        s, chunk, ns, *v.stride()[:3],
        H=h, G=g, BG=max(16, triton.next_power_of_2(g)), D=d, BD=max(32, triton.next_power_of_2(d)), NW=nw,
        NWP=triton.next_power_of_2(nw), T=t, BT=triton.next_power_of_2(t), F32=interp or q.dtype == torch.float32,
        BS=bs, **cfg)
    out = torch.empty_like(q)
    decode_attn_combine_kernel[(b * hq,)](o_part, lse_part, out, ns, G=g, D=d, BD=max(32, triton.next_power_of_2(d)),
                                          BNS=16 if interp else 32)
    return out


__all__ = ["to_indexed", "pack_queries", "decode_attn_indexed"]
