"""Triton split-K (flash-decoding) attention of new tokens over a compressed prefix and a dense tail.

Work split: one program per (split, query row, KV head). A query row is one new token, or ``FOLD`` new tokens of a
step of several whose queries share the row's head group (``G`` = query heads a KV head × ``FOLD``); the ``R`` query
rows of a key row read that key row, each new token seeing the tail up to its own token. A split
is a run of ``CHUNK`` prefix tokens (or ``CHUNK_T`` tail tokens); each program walks its run in tiles of ``BS``
tokens with an online softmax (base 2) and writes a normalised partial output ``[G, D]`` plus its log-sum-exp;
``decode_attn_combine_kernel`` merges the splits.
The launcher picks the tile config and the number of splits together (``launch_candidates``): on the first call for
a shape class it times each candidate as CUDA-graph replays and keeps the fastest.

GQA: the ``G`` query heads of a KV head form one ``[BG, D]`` block (``BG`` = G padded to 16), so every key tile is
read and decoded once per KV head and reused by all G heads through ``tl.dot``.

SparK tiles (no dense key is ever written to memory). For a tile of ``BS`` tokens, with channel ``j`` = bit
``j % 32`` of word ``j // 32``:
    kept    its bit in ``kept_bits``;  rank = kept bits below ``j`` (exclusive cumsum of the per-word popcounts
            + a masked popcount);
    K_kept  ``kept_values[t, rank]`` where kept, else 0. ``EXPAND`` picks how:
            ``EXPAND_PTX`` (GPU): inline PTX, two channels per asm (``_expand_asm``: popc, mad.wide, predicated
            ``ld.global.nc.b16``) over a ``[32, BS, NWP]`` (bit, token, word) tile. For that shape Triton puts the
            lanes of a warp on the channels of ONE token, so a warp-wide gather reads one token's kept values (one
            or two 128-byte lines); the channel order of the tile is therefore ``bit·NWP + word``, and q, q ⊙ u
            and the sign tile use the same order (a dot does not care). The bitmap words are loaded as
            ``[BS, NWP]`` tiles, which Triton software-pipelines through shared memory (num_stages > 1), and
            broadcast from there; the kept values are prefetched to L1 ``PF`` tiles ahead;
            ``EXPAND_PTX_TOKENS`` (GPU): the same asm over a ``[BS, NWP, 32]`` tile, whose lanes span 8-16 tokens
            (more L1 wavefronts per gather); kept as a launch candidate because it wins at D = 64;
            ``EXPAND_GLOBAL``: plain Triton, gathering from global memory;
            ``EXPAND_TILE`` (interpreter): ``tl.gather`` from a ``[BS, BDK]`` tile loaded contiguously;
    scores  ``q · K_keptᵀ`` (model dtype operands, fp32 accumulate)
            + ``r_t · ((q ⊙ u) · Sgnᵀ)`` with ``Sgn = ±1`` on pruned channels, 0 on kept ones (bf16 operands: ±1 is
            exact, and bf16 keeps ``q ⊙ u`` in range for fp16 models), which is spec §3's
            ``Σ_kept q_j K[t, j] + r_t·Σ_pruned sign[t, j]·(q ⊙ u)_j``; ``constant``: ``r_t = c``, ``u = 1``;
            ``zero``: no second term.
Dense tiles (DenseKeys prefix — the λ = 0 control — and the tail) take ``q · Kᵀ`` directly (``_dense_tiles``).

Performance (H200, BENCHMARKS.md): dense tiles run at SDPA speed (~4.0-4.3 TB/s at 32K·b8 / 128K·b8); SparK tiles
reach ~2 TB/s (0.57-0.71x of SDPA at D = 128, 32K-128K; 0.66-0.77x at D = 64): bound by the instructions that
rebuild the tile, not by bytes. See BENCHMARKS.md.

Casts: loads stay in the model dtype for the dots; scores, softmax statistics and the accumulator are fp32;
the output is cast to the query dtype by the combine kernel. Under ``TRITON_INTERPRET=1`` every tile is cast to
fp32 right after loading (``F32``) because the interpreter has no bf16 arithmetic.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
import triton.testing
from triton.language.extra import libdevice

from sparkv.cache.layout import CompressedKV, DenseKeys, Prefix, SparKKeys, SparKPages, num_words
from sparkv.kernels.autotune import autotune_disabled, cdiv, interpreting, launch_device, next_power_of_2, num_sms
from sparkv.kernels.decode_attn.reference import check_scaling, check_tail

LOG2E = 1.4426950408889634
LAYOUT_NONE, LAYOUT_DENSE, LAYOUT_SPARK = 0, 1, 2
REC_MEAN, REC_ZERO, REC_CONSTANT = 0, 1, 2
_RECOVERY_IDS = {"mean": REC_MEAN, "mean_linear": REC_MEAN, "zero": REC_ZERO, "constant": REC_CONSTANT}

# Split sizes are multiples of this so that every config's BS divides them.
CHUNK_ALIGN = 256
# Launch about this many programs per multiprocessor (several resident programs hide the load latency);
# measured on the H200: 4 for dense tiles, 8 for SparK tiles (latency-bound gathers), 24 for the one-warp SparK
# candidates of small heads.
PROGRAMS_PER_SM = {"dense": 4, "spark": 8, "spark_small_head": 24}
SMALL_HEAD_DIM = 64


def _expand_asm(with_sign: bool) -> str:
    """PTX for two channels (``pack=2``) of a SparK tile: the kept value (or 0) and, optionally, the pruned sign
    (+1 / -1 as bf16, 0 where kept), each pair packed in one 32-bit register. Operands per channel: kept word,
    [sign word], bit mask ``1 << i``, low mask ``(1 << i) - 1``, int32 offset of the word's first kept value,
    64-bit base address of the (b, h) slice of ``kept_values``."""
    n_out = 2 if with_sign else 1
    names = ["kw", "sw", "bit", "low", "off", "base"] if with_sign else ["kw", "bit", "low", "off", "base"]

    def op(name: str, lane: int) -> str:
        return f"${n_out + 2 * names.index(name) + lane}"

    lines = ["{", ".reg .pred pk, ps;", ".reg .b32 w, c;", ".reg .b64 a;", ".reg .b16 k0, k1, s0, s1;"]
    for lane in (0, 1):
        lines += [
            f"and.b32 w, {op('kw', lane)}, {op('bit', lane)};",
            "setp.ne.b32 pk, w, 0;",
            f"and.b32 w, {op('kw', lane)}, {op('low', lane)};",
            "popc.b32 c, w;",
            f"add.u32 c, c, {op('off', lane)};",
            f"mad.wide.u32 a, c, 2, {op('base', lane)};",
            f"mov.b16 k{lane}, 0;",
            f"@pk ld.global.nc.b16 k{lane}, [a];",
        ]
        if with_sign:
            lines += [
                f"and.b32 w, {op('sw', lane)}, {op('bit', lane)};",
                "setp.ne.b32 ps, w, 0;",
                f"selp.b16 s{lane}, 0x3F80, 0xBF80, ps;",
                f"@pk mov.b16 s{lane}, 0;",
            ]
    lines.append("mov.b32 $0, {k0, k1};")
    if with_sign:
        lines.append("mov.b32 $1, {s0, s1};")
    lines.append("}")
    return "\n".join(lines)


ASM_KEPT_SIGN = tl.constexpr(_expand_asm(True))
ASM_KEPT = tl.constexpr(_expand_asm(False))
# How a SparK tile is rebuilt (module docstring).
EXPAND_TILE, EXPAND_GLOBAL, EXPAND_PTX, EXPAND_PTX_TOKENS = 0, 1, 2, 3


@triton.jit
def _popc(x, USE_POPC: tl.constexpr):
    if USE_POPC:
        return libdevice.popc(x)
    else:
        # SWAR popcount (the interpreter has no libdevice).
        x = x - ((x >> 1) & 0x55555555)
        x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
        x = (x + (x >> 4)) & 0x0F0F0F0F
        return ((x * 0x01010101) >> 24) & 0x3F


@triton.jit
def _absorb(b_s, b_v, b_m, b_l, b_acc):
    """Online-softmax step (base 2): scores ``[BG, BS]`` (masked with -inf), values ``[BS, BD]``."""
    b_mn = tl.maximum(b_m, tl.max(b_s, axis=1))
    b_p = tl.exp2(b_s - b_mn[:, None])
    b_alpha = tl.exp2(b_m - b_mn)
    b_l = b_l * b_alpha + tl.sum(b_p, axis=1)
    b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v)
    return b_mn, b_l, b_acc


@triton.jit
def _absorb_rows(b_s, b_v, b_m, b_l, b_acc):
    """:func:`_absorb` for scores whose rows may all be -inf so far (folded new tokens see the tail up to their own
    token, so a tile can hold nothing for some rows): such rows keep ``m = -inf``, ``l = 0`` and no NaN."""
    b_mn = tl.maximum(b_m, tl.max(b_s, axis=1))
    b_mz = tl.where(b_mn == float("-inf"), 0.0, b_mn)
    b_p = tl.exp2(b_s - b_mz[:, None])
    b_alpha = tl.exp2(b_m - b_mz)
    b_l = b_l * b_alpha + tl.sum(b_p, axis=1)
    b_acc = b_acc * b_alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v)
    return b_mn, b_l, b_acc


def _config(bs: int, warps: int, stages: int, expand: int, pf: int = 1, maxnreg: int | None = None) -> triton.Config:
    return triton.Config({"BS": bs, "EXPAND": expand, "PF": pf}, num_warps=warps, num_stages=stages, maxnreg=maxnreg)


# GPU candidates for dense tiles (DenseKeys prefix, tail only): EXPAND / PF are unused there.
DENSE_CONFIGS = [
    _config(64, 4, 2, EXPAND_PTX),
    _config(32, 4, 3, EXPAND_PTX),
    _config(64, 4, 3, EXPAND_PTX),
    _config(64, 8, 2, EXPAND_PTX),
    _config(128, 8, 2, EXPAND_PTX),
]
# GPU candidates for SparK tiles (`benchmarks/decode_attention.py --explore` on the H200). EXPAND_PTX: 32-token
# tiles, 4 warps, 3 stages lead (16-token tiles run at half speed; 8 warps lose; a register cap of 128 is +-3 %);
# it is the faster layout at D = 128. EXPAND_PTX_TOKENS (the session-1 layout) stays a candidate: it was faster
# at D = 64.
SPARK_CONFIGS = [
    _config(32, 4, 3, EXPAND_PTX, pf=1, maxnreg=128),
    _config(32, 4, 3, EXPAND_PTX, pf=1),
    _config(32, 4, 3, EXPAND_PTX, pf=2, maxnreg=128),
    _config(64, 8, 3, EXPAND_PTX, pf=1, maxnreg=128),
    _config(64, 4, 2, EXPAND_PTX_TOKENS, pf=1),
    _config(32, 2, 3, EXPAND_PTX_TOKENS, pf=1),  # session 1's D = 64 pick (dropped in session 2, a regression)
    _config(32, 4, 3, EXPAND_PTX_TOKENS, pf=1),
    _config(64, 4, 3, EXPAND_PTX_TOKENS, pf=1),
]
# Extra candidates for small heads (D <= 64, SmolLM2): 16-token tiles, one warp per program (the softmax never
# crosses warps), launched 24 per multiprocessor; at D = 128 they lose by 3-10 % (BENCHMARKS.md, "Session 4").
SPARK_CONFIGS_SMALL_HEAD = [
    _config(16, 1, 3, EXPAND_PTX, pf=1),
    _config(16, 1, 3, EXPAND_PTX_TOKENS, pf=1),
]
# Global gather in plain Triton: slower on the H200, kept as the simple GPU alternative (and tested there).
OTHER_CONFIGS = [_config(64, 4, 2, EXPAND_GLOBAL)]
# EXPAND_TILE is the interpreter's mode only: on sm_90 triton 3.6 fails an assertion in OptimizeThreadLocality
# for some tile-gather shapes (e.g. D = 64 with 8 warps), and it was the slowest mode where it compiled.
INTERPRET_CONFIG = _config(16, 4, 1, EXPAND_TILE, pf=0)


def launch_candidates(layout: int, head_dim: int) -> list[tuple[triton.Config, int]]:
    """The (config, programs per multiprocessor) pairs the launcher times for a layout. The split count is chosen
    with the config because they interact: one-warp programs want three times as many splits as four-warp ones."""
    if layout != LAYOUT_SPARK:
        return [(c, PROGRAMS_PER_SM["dense"]) for c in DENSE_CONFIGS]
    pairs = [(c, PROGRAMS_PER_SM["spark"]) for c in SPARK_CONFIGS]
    if head_dim <= SMALL_HEAD_DIM:
        pairs += [(c, PROGRAMS_PER_SM["spark_small_head"]) for c in SPARK_CONFIGS_SMALL_HEAD]
    return pairs


def launch_kwargs(config: triton.Config) -> dict:
    """A config as the keyword arguments of a launch (``config=`` of :func:`decode_attn_triton`)."""
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages, maxnreg=config.maxnreg)


# (layout, recovery, shape constants, dtype, tail, size class, device) -> (launch kwargs, programs per SM): the
# launcher's choice, timed once per key (``SPARKV_AUTOTUNE=0``: the first candidate, untimed).
_TUNED: dict[tuple, tuple[dict, int]] = {}
# What the last call launched (benchmarks record it per row).
LAST_LAUNCH: dict = {}


def prefetch_lanes(bs: int, dk: int) -> int:
    """Lanes of the kept-values prefetch: the 128-byte lines one tile spans (+1 for a straddling row), pow2."""
    return next_power_of_2(cdiv(bs * dk * 2, 128) + 1)  # a heuristic: evaluated at every launch


@functools.lru_cache(maxsize=256)  # once per case, not per decode step (callers unpack it, never change it)
def shape_constexprs(h: int, g: int, d: int, dk: int) -> dict[str, int]:
    """The kernel's shape constants for ``h`` KV heads, ``g`` query heads per KV head, head_dim ``d``, ``dk`` kept."""
    nw = num_words(d)
    return dict(H=h, G=g, BG=max(16, next_power_of_2(g)), D=d, BD=max(32, next_power_of_2(d)), NW=nw,
                NWP=next_power_of_2(nw), DK=dk, BDK=next_power_of_2(dk))


@triton.jit
def _prefetch_lines_l1(addr, lo, hi, o_l):
    """Prefetch to L1 the 128-byte lines ``addr + 128·o_l``, clamped to ``[lo, hi]`` (byte addresses)."""
    a = tl.maximum(tl.minimum(addr + o_l.to(tl.int64) * 128, hi), lo)
    tl.inline_asm_elementwise("prefetch.global.L1 [$1];\nmov.u32 $0, 0;", "=r,l", [a], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def _dense_tiles(b_q, k, v, s_k, s_v, start, end, scale, b_m, b_l, b_acc,
                 D: tl.constexpr, BD: tl.constexpr, F32: tl.constexpr, BS: tl.constexpr, row_end=None,
                 ROWS: tl.constexpr = False):
    """Absorb dense tokens ``start .. end-1`` of one (b, h): ``k``, ``v`` point at its token 0, ``s_*`` = row
    strides. ``ROWS``: query row ``i`` sees tokens below ``row_end[i]`` only (folded new tokens in the tail)."""
    o_j = tl.arange(0, BD)
    m_j = o_j < D
    for t0 in range(start, end, BS):
        o_t = t0 + tl.arange(0, BS)
        m_t = o_t < end
        m_tj = m_t[:, None] & m_j[None, :]
        b_k = tl.load(k + o_t[:, None].to(tl.int64) * s_k + o_j[None, :], mask=m_tj, other=0)
        b_v = tl.load(v + o_t[:, None].to(tl.int64) * s_v + o_j[None, :], mask=m_tj, other=0)
        if F32:
            b_k = b_k.to(tl.float32)
            b_v = b_v.to(tl.float32)
        b_s = tl.dot(b_q, tl.trans(b_k)) * scale
        if ROWS:
            b_s = tl.where(m_t[None, :] & (o_t[None, :] < row_end[:, None]), b_s, float("-inf"))
            b_m, b_l, b_acc = _absorb_rows(b_s, b_v, b_m, b_l, b_acc)
        else:
            b_s = tl.where(m_t[None, :], b_s, float("-inf"))
            b_m, b_l, b_acc = _absorb(b_s, b_v, b_m, b_l, b_acc)
    return b_m, b_l, b_acc


@triton.heuristics({
    "NLK": lambda args: prefetch_lanes(args["BS"], args["DK"]),
})
@triton.jit(do_not_specialize=["S", "ST", "CHUNK", "CHUNK_T", "NSP", "NS"])
def decode_attn_fwd_kernel(
    q,  # [B*R, HQ*FOLD, 1, D] contiguous: R query rows per row of the keys, each FOLD new tokens (in order)
    kd,  # DenseKeys prefix [B, H, S, D] (LAYOUT_DENSE)
    kv,  # kept_values [B, H, S, DK] (LAYOUT_SPARK)
    kb,  # kept_bits [B, H, S, NW]
    sb,  # sign_bits [B, H, S, NW]
    r,  # scale [B, H, S]
    u,  # [B, H, D] float32
    v,  # prefix values [B, H, S, D]
    lens,  # [B] int32 valid prefix tokens per row
    tk,  # tail keys [B, H, ST, D]
    tv,  # tail values [B, H, ST, D]
    tail_len,  # [1] int: valid tail tokens, read on the device (TAIL_ON_DEVICE), else ST
    o_part,  # [B*H, NS, G, D] float32
    lse_part,  # [B*H, NS, G] float32 (base 2)
    scale,  # softmax scale * log2(e)
    const,  # constant recovery magnitude
    S, ST, CHUNK, CHUNK_T, NSP, NS,
    R,  # query rows per key row: query row i_b reads key row i_b // R and the tail up to its own token
    s_kd_b, s_kd_h, s_kd_s,
    s_v_b, s_v_h, s_v_s,
    s_tk_b, s_tk_h, s_tk_s,
    s_tv_b, s_tv_h, s_tv_s,
    H: tl.constexpr,
    G: tl.constexpr,
    BG: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,
    NW: tl.constexpr,
    NWP: tl.constexpr,
    DK: tl.constexpr,
    BDK: tl.constexpr,
    LAYOUT: tl.constexpr,
    RECOVERY: tl.constexpr,
    HAS_TAIL: tl.constexpr,
    TAIL_ON_DEVICE: tl.constexpr,
    EXPAND: tl.constexpr,
    PF: tl.constexpr,
    NLK: tl.constexpr,
    USE_POPC: tl.constexpr,
    F32: tl.constexpr,
    BS: tl.constexpr,
    FOLD: tl.constexpr = 1,
):
    i_s, i_bh = tl.program_id(0), tl.program_id(1)  # i_bh: a query row's KV head (outputs)
    i_b, i_h = i_bh // H, i_bh % H
    i_b64, i_h64, i_bh64 = i_b.to(tl.int64), i_h.to(tl.int64), i_bh.to(tl.int64)
    # The keys' row i_d and its KV head i_kh64 (inputs). R = 1 is specialised by the JIT as a constant: that build
    # is the one-token kernel's own, instruction for instruction.
    if R == 1:
        i_d, i_d64, i_kh64 = i_b, i_b64, i_bh64
    else:
        i_d = i_b // R
        i_d64 = i_d.to(tl.int64)
        i_kh64 = i_d64 * H + i_h64

    o_g = tl.arange(0, BG)
    o_j = tl.arange(0, BD)
    m_g = o_g < G
    m_j = o_j < D

    # The G query heads of this KV head: [BG, BD] (padding rows and channels are 0).
    p_q = q + (i_b64 * (H * G) + i_h * G + o_g[:, None]) * D
    b_q = tl.load(p_q + o_j[None, :], mask=m_g[:, None] & m_j[None, :], other=0)
    if F32:
        b_q = b_q.to(tl.float32)

    b_m = tl.full([BG], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BG], dtype=tl.float32)
    b_acc = tl.zeros([BG, BD], dtype=tl.float32)

    if i_s < NSP:
        start = i_s * CHUNK
        end = tl.minimum(start + CHUNK, tl.load(lens + i_d))
        p_v0 = v + i_d64 * s_v_b + i_h64 * s_v_h
        if LAYOUT == 1:
            b_m, b_l, b_acc = _dense_tiles(b_q, kd + i_d64 * s_kd_b + i_h64 * s_kd_h, p_v0, s_kd_s, s_v_s, start, end,
                                           scale, b_m, b_l, b_acc, D, BD, F32, BS)
        elif LAYOUT == 2:
            o_w = tl.arange(0, NWP)
            m_w = o_w < NW
            p_kv0 = kv + i_kh64 * S * DK
            if EXPAND == 2:
                # Channel order c = bit·NWP + word for channel j = word·32 + bit: the rebuilt tile is [32, BS, NWP]
                # (bit, token, word), a shape for which Triton puts a warp's lanes on the channels of ONE token, so
                # each warp-wide gather reads one token's kept values (one or two 128-byte lines, not 8-16).
                # q, u and the sign tile follow the same order; the dot does not care.
                tl.static_assert(BD == 32 * NWP)
                o_jq = (o_j % NWP) * 32 + o_j // NWP
                m_jq = o_jq < D
                b_qs = tl.load(p_q + o_jq[None, :], mask=m_g[:, None] & m_jq[None, :], other=0)
            else:
                o_jq = o_j
                m_jq = m_j
                b_qs = b_q
            if RECOVERY == 0:
                b_u = tl.load(u + i_kh64 * D + o_jq, mask=m_jq, other=0)
                b_qu = (b_qs.to(tl.float32) * b_u[None, :])
            else:
                b_qu = b_qs.to(tl.float32)
            if not F32:
                b_qu = b_qu.to(tl.bfloat16)
            if EXPAND >= 2:
                # PTX expansion: bit masks per channel of a word, the slice's base address as a 64-bit integer.
                o_b = tl.arange(0, 32)
                if EXPAND == 2:
                    b_bit = (1 << o_b)[:, None, None]
                    b_low = ((1 << o_b) - 1)[:, None, None]
                    b_base = tl.zeros([32, BS, NWP], dtype=tl.int64) + p_kv0.to(tl.int64)
                else:
                    b_bit = (1 << o_b)[None, None, :]
                    b_low = ((1 << o_b) - 1)[None, None, :]
                    b_base = tl.zeros([BS, NWP, 32], dtype=tl.int64) + p_kv0.to(tl.int64)
                # Prefetch PF tiles ahead, clamped to this split.
                a_kv = p_kv0.to(tl.int64)
            else:
                o_i = tl.arange(0, BDK)
                b_jw = tl.broadcast_to((o_j // 32)[None, :], (BS, BD))
                b_jb = (o_j % 32)[None, :]
                b_low2 = ((tl.full([BD], 1, tl.int64) << (o_j % 32).to(tl.int64)) - 1).to(tl.int32)[None, :]
            for t0 in range(start, end, BS):
                o_t = t0 + tl.arange(0, BS)
                m_t = o_t < end
                o_t64 = o_t.to(tl.int64)
                if EXPAND >= 2:
                    if PF > 0:
                        # Kept values to L1 (the gathers hit it); the bitmap words are software-pipelined through
                        # shared memory by Triton (num_stages > 1).
                        t_pf = t0 + PF * BS
                        _prefetch_lines_l1(a_kv + t_pf * (DK * 2), a_kv + start * (DK * 2),
                                           a_kv + end * (DK * 2) - 1, tl.arange(0, NLK))
                    # Words of tokens past `end` load as 0 (nothing kept); b_off = int32 offset (within this (b, h))
                    # of each word's first kept value.
                    if EXPAND == 2:
                        # [BS, NWP] words broadcast to the [32, BS, NWP] (bit, token, word) tile.
                        p_w = i_kh64 * S * NW + o_t64[:, None] * NW + o_w[None, :]
                        m_w2 = m_t[:, None] & m_w[None, :]
                        b_kw2 = tl.load(kb + p_w, mask=m_w2, other=0)
                        b_cnt = _popc(b_kw2, USE_POPC)
                        b_off = tl.broadcast_to(((o_t * DK)[:, None] + tl.cumsum(b_cnt, axis=1) - b_cnt)[None, :, :],
                                                (32, BS, NWP))
                        b_kw = tl.broadcast_to(b_kw2[None, :, :], (32, BS, NWP))
                        if RECOVERY != 1:
                            b_sw = tl.broadcast_to(tl.load(sb + p_w, mask=m_w2, other=0)[None, :, :], (32, BS, NWP))
                    else:
                        # [BS, NWP, 32] (token, word, bit) tile.
                        p_w = i_kh64 * S * NW + o_t64[:, None, None] * NW + o_w[None, :, None]
                        m_w3 = m_t[:, None, None] & m_w[None, :, None]
                        b_kw = tl.load(kb + p_w, mask=m_w3, other=0)
                        b_cnt = _popc(b_kw, USE_POPC)
                        b_off = (o_t * DK)[:, None, None] + tl.cumsum(b_cnt, axis=1) - b_cnt
                        if RECOVERY != 1:
                            b_sw = tl.load(sb + p_w, mask=m_w3, other=0)
                    if RECOVERY != 1:
                        b_k, b_sgn = tl.inline_asm_elementwise(
                            ASM_KEPT_SIGN, "=r,=r,r,r,r,r,r,r,r,r,r,r,l,l",
                            [b_kw, b_sw, b_bit, b_low, b_off, b_base],
                            dtype=(b_q.dtype, tl.bfloat16), is_pure=True, pack=2)
                        if EXPAND == 2:
                            b_sgn = tl.permute(b_sgn, (1, 0, 2))
                        b_sgn = tl.reshape(b_sgn, (BS, BD))
                    else:
                        b_k = tl.inline_asm_elementwise(
                            ASM_KEPT, "=r,r,r,r,r,r,r,r,r,l,l",
                            [b_kw, b_bit, b_low, b_off, b_base], dtype=b_q.dtype, is_pure=True, pack=2)
                    if EXPAND == 2:
                        b_k = tl.permute(b_k, (1, 0, 2))
                    b_k = tl.reshape(b_k, (BS, BD))
                else:
                    p_w = i_kh64 * S * NW + o_t64[:, None] * NW + o_w[None, :]
                    b_kb = tl.load(kb + p_w, mask=m_t[:, None] & m_w[None, :], other=0)
                    b_kw = tl.gather(b_kb, b_jw, axis=1)
                    m_kept = ((b_kw >> b_jb) & 1) != 0
                    b_cnt = _popc(b_kb, USE_POPC)
                    b_rank = tl.gather(tl.cumsum(b_cnt, axis=1) - b_cnt, b_jw, axis=1) + _popc(b_kw & b_low2, USE_POPC)
                    b_rank = tl.where(m_kept, b_rank, 0)
                    if EXPAND == 1:
                        b_k = tl.load(p_kv0 + o_t64[:, None] * DK + b_rank, mask=m_kept, other=0)
                    else:
                        p_kv = p_kv0 + o_t64[:, None] * DK + o_i[None, :]
                        b_kt = tl.load(p_kv, mask=m_t[:, None] & (o_i < DK)[None, :], other=0)
                        b_k = tl.where(m_kept, tl.gather(b_kt, b_rank, axis=1), 0)
                    if RECOVERY != 1:
                        b_sw = tl.gather(tl.load(sb + p_w, mask=m_t[:, None] & m_w[None, :], other=0), b_jw, axis=1)
                        b_sgn = tl.where(m_kept, 0.0, tl.where(((b_sw >> b_jb) & 1) != 0, 1.0, -1.0))
                        if not F32:
                            b_sgn = b_sgn.to(tl.bfloat16)
                p_v = p_v0 + o_t64[:, None] * s_v_s + o_j[None, :]
                b_v = tl.load(p_v, mask=m_t[:, None] & m_j[None, :], other=0)
                if F32:
                    b_k = b_k.to(tl.float32)
                    b_v = b_v.to(tl.float32)
                b_s = tl.dot(b_qs, tl.trans(b_k)) * scale
                if RECOVERY != 1:
                    b_rec = tl.dot(b_qu, tl.trans(b_sgn))
                    if RECOVERY == 0:
                        b_r = tl.load(r + i_kh64 * S + o_t, mask=m_t, other=0).to(tl.float32)
                        b_s += b_rec * (b_r * scale)[None, :]
                    else:
                        b_s += b_rec * (const * scale)
                b_s = tl.where(m_t[None, :], b_s, float("-inf"))
                b_m, b_l, b_acc = _absorb(b_s, b_v, b_m, b_l, b_acc)
    else:
        if HAS_TAIL:
            start = (i_s - NSP) * CHUNK_T
            # On the device (CUDA graphs): the buffers' capacity ST is fixed, the valid length grows each step.
            # Query i_b % R of R sees the tail up to its own token: the last R valid tokens are the R queries'.
            if FOLD == 1:
                st = (tl.load(tail_len) if TAIL_ON_DEVICE else ST) - (R - 1 - i_b % R)
                b_m, b_l, b_acc = _dense_tiles(b_q, tk + i_d64 * s_tk_b + i_h64 * s_tk_h,
                                               tv + i_d64 * s_tv_b + i_h64 * s_tv_h,
                                               s_tk_s, s_tv_s, start, tl.minimum(start + CHUNK_T, st), scale,
                                               b_m, b_l, b_acc, D, BD, F32, BS)
            else:
                # FOLD new tokens share a query row's head group: group row o_g = g·FOLD + f is token
                # (i_b % R)·FOLD + f of the R·FOLD new tokens of its key row, each seeing the tail up to itself.
                st = tl.load(tail_len) if TAIL_ON_DEVICE else ST
                # (at least 1: the zero queries padding the step in front then see a token, so no row is 0/0)
                st_rows = tl.maximum(st - (R * FOLD - 1 - ((i_b % R) * FOLD + o_g % FOLD)), 1)
                b_m, b_l, b_acc = _dense_tiles(b_q, tk + i_d64 * s_tk_b + i_h64 * s_tk_h,
                                               tv + i_d64 * s_tv_b + i_h64 * s_tv_h,
                                               s_tk_s, s_tv_s, start, tl.minimum(start + CHUNK_T, st), scale,
                                               b_m, b_l, b_acc, D, BD, F32, BS, st_rows, True)

    # Normalised partial output and its log-sum-exp (base 2); an empty split writes 0 and -inf.
    m_nonempty = b_l > 0
    b_ls = tl.where(m_nonempty, b_l, 1.0)
    b_o = b_acc / b_ls[:, None]
    b_lse = tl.where(m_nonempty, b_m + tl.log2(b_ls), float("-inf"))
    p_o = o_part + ((i_bh64 * NS + i_s) * G + o_g[:, None]) * D + o_j[None, :]
    tl.store(p_o, b_o, mask=m_g[:, None] & m_j[None, :])
    tl.store(lse_part + (i_bh64 * NS + i_s) * G + o_g, b_lse, mask=m_g)


@triton.jit(do_not_specialize=["NS"])
def decode_attn_combine_kernel(
    o_part,  # [B*H, NS, G, D] float32
    lse_part,  # [B*H, NS, G] float32, base 2
    o,  # [B, HQ, 1, D]
    NS,
    G: tl.constexpr,
    D: tl.constexpr,
    BD: tl.constexpr,  # columns per program: grid (B*HQ, cdiv(D, BD))
    BNS: tl.constexpr,  # slots per pass
):
    i_bhg = tl.program_id(0).to(tl.int64)  # = (b*H + h)*G + g = b*HQ + hq
    i_bh, i_g = i_bhg // G, i_bhg % G
    o_j = tl.program_id(1) * BD + tl.arange(0, BD)
    m_j = o_j < D
    b_m = tl.full([1], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([1], dtype=tl.float32)
    b_acc = tl.zeros([BD], dtype=tl.float32)
    for s0 in range(0, NS, BNS):
        o_s = s0 + tl.arange(0, BNS)
        m_s = o_s < NS
        # Both loads before any use: the partials' addresses do not depend on the log-sum-exps, so one L2 round
        # trip serves a pass (BENCHMARKS.md "Session 17").
        b_lse = tl.load(lse_part + (i_bh * NS + o_s) * G + i_g, mask=m_s, other=float("-inf"))
        p_o = o_part + ((i_bh * NS + o_s[:, None]) * G + i_g) * D + o_j[None, :]
        b_o = tl.load(p_o, mask=m_s[:, None] & m_j[None, :], other=0)
        b_mn = tl.maximum(b_m, tl.max(b_lse, axis=0))
        b_safe = tl.where(b_mn == float("-inf"), 0.0, b_mn)
        b_w = tl.exp2(b_lse - b_safe)
        b_alpha = tl.exp2(b_m - b_safe)
        b_acc = b_acc * b_alpha + tl.sum(b_w[:, None] * b_o, axis=0)
        b_l = b_l * b_alpha + tl.sum(b_w, axis=0)
        b_m = b_mn
    tl.store(o + i_bhg * D + o_j, (b_acc / b_l).to(o.dtype.element_ty), mask=m_j)


COMBINE_COLUMNS = 32  # output columns per combine program
SPARK_KERNELS = ("auto", "cuda", "triton")
_CUDA_FAILED: dict[int, str] = {}  # device index -> why NVRTC / the module load failed there (auto falls back)


def _spark_kernel_choice(choice: str | None) -> str:
    """``spark_kernel`` of :func:`decode_attn_triton`, else ``SPARKV_SPARK_KERNEL``, else ``auto`` (checked)."""
    import os

    choice = choice or os.environ.get("SPARKV_SPARK_KERNEL", "auto")
    if choice not in SPARK_KERNELS:
        raise ValueError(f"spark_kernel / SPARKV_SPARK_KERNEL must be one of {', '.join(SPARK_KERNELS)}; "
                         f"got {choice!r}")
    return choice


def _warn_pages_unpacked(device: torch.device) -> None:
    """Pages reached a path that reads arrays (``spark_kernel='triton'``, no NVRTC, the interpreter): say once per
    device that each step now unpacks the prefix (correct, but it copies the prefix every step)."""
    import warnings

    if device not in _PAGES_UNPACKED:
        _PAGES_UNPACKED.add(device)
        warnings.warn("sparkv: a SparK prefix held as pages (the CUDA kernel's layout) is decoded by a kernel that "
                      "reads arrays; every step unpacks it (build the cache with that choice in force to keep arrays)",
                      stacklevel=4)


_PAGES_UNPACKED: set = set()


def _cuda_spark_plan(query: torch.Tensor, prefix: Prefix, scaling: float, choice: str):
    """The CUDA C++ split kernel's plan when it takes this SparK prefix, else None (``choice``: see
    :func:`_spark_kernel_choice`)."""
    import warnings

    if choice == "triton":
        return None
    from sparkv.kernels.decode_attn import cuda

    plan, why = cuda.try_plan(query, prefix, scaling)
    if why is not None and choice == "cuda":
        raise ValueError(f"spark_kernel='cuda' cannot run here: {why}; use 'auto' or 'triton'")
    if why is not None:
        dev = prefix.device.index or 0
        if why.startswith("NVRTC") and dev not in _CUDA_FAILED:
            _CUDA_FAILED[dev] = why
            warnings.warn(f"sparkv: the CUDA SparK kernel is unavailable ({why}); using the Triton kernel",
                          stacklevel=3)
    return plan


def combine_partials(o_part: torch.Tensor, lse_part: torch.Tensor, query: torch.Tensor,
                     slots_per_pass: int | None = None) -> torch.Tensor:
    """Merge split partials (``[B*H, NS, G, D]`` / ``[B*H, NS, G]``, log-sum-exps in base 2) into ``[B, HQ, 1, D]``
    in the query dtype; :func:`~sparkv.kernels.decode_attn.reference.combine_partials_ref` is its reference.
    ``slots_per_pass`` (a power of two; default below) is for benchmarks/combine_passes_ab.py."""
    b, hq, _, d = query.shape
    ns = o_part.shape[1]
    out = torch.empty(b, hq, 1, d, dtype=query.dtype, device=query.device)
    # Every slot in one pass up to 256 (each further pass waits on another round of loads: BENCHMARKS.md
    # "Session 9"), and 32 columns a program, i.e. D / 32 programs per query head: more multiprocessors share the
    # reads (0.999-1.062x a whole step on the H200, the most where a step has over 64 slots: "Session 17").
    bns = slots_per_pass or min(256, max(16, next_power_of_2(ns)))  # host helpers: this runs every decode step
    decode_attn_combine_kernel[(b * hq, cdiv(d, COMBINE_COLUMNS))](o_part, lse_part, out, ns, G=o_part.shape[2], D=d,
                                                                  BD=COMBINE_COLUMNS, BNS=bns)
    return out


def size_class(batch: int, heads: int, prefix_tokens: int) -> int:
    """log4 of B·H·S over the prefix: the coarse size class a timed launch choice is kept for. The tail is left out:
    it grows by one token a step, so counting it would change the class, and time the choice again, in the middle of
    a generation, and let eager steps and a CUDA graph (which runs its reserved tail from its first step) choose
    different launches, whose sums round differently."""
    return max(batch * heads * prefix_tokens, 1).bit_length() // 2


def _choose_launch(prepare, candidates: list[tuple[triton.Config, int]]) -> tuple[dict, int]:
    """The fastest (launch kwargs, programs per SM) of ``candidates``; ``prepare(launch, per_sm)`` returns the launch
    as a closure (plus its buffers). Each candidate is timed as CUDA-graph replays, so small decode steps rank by GPU
    time rather than by the host's launch overhead; candidates that fail to compile are skipped (as triton's
    autotuner skips out-of-resource configs)."""
    if autotune_disabled():
        return launch_kwargs(candidates[0][0]), candidates[0][1]
    best, best_ms, errors = None, float("inf"), []
    for config, per_sm in candidates:
        launch = launch_kwargs(config)
        try:
            split_kernel = prepare(launch, per_sm)[0]
            split_kernel()  # compile outside the capture
            # do_bench_cudagraph works on a stream of its own, which does not wait for the caller's stream: wait
            # here, so that it never reads inputs the caller's stream is still writing.
            torch.cuda.synchronize()
            ms = triton.testing.do_bench_cudagraph(split_kernel, rep=10)
        except Exception as e:  # noqa: BLE001 - a candidate that cannot compile or launch here
            errors.append(f"{config}: {e!r}"[:200])
            continue
        if ms < best_ms:
            best, best_ms = (launch, per_sm), ms
    if best is None:
        raise RuntimeError("no decode kernel candidate ran: " + "; ".join(errors))
    return best


def _choose_chunk(tokens: int, parallel: int, device: torch.device, align: int, per_sm: int) -> int:
    """Tokens per split: about ``per_sm`` programs per multiprocessor, at least one ``align`` tile. (The CUDA
    kernel's ``cuda.balanced_chunk`` is not used here: it models that kernel's resident blocks, and this kernel's
    ``per_sm`` is chosen by timing candidates in ``_choose_launch`` instead.)"""
    sms = num_sms(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 8
    splits = max(1, min(cdiv(tokens, align), cdiv(per_sm * sms, max(parallel, 1))))
    return cdiv(cdiv(tokens, splits), align) * align


# Query rows a program takes when a step's new tokens fold into the head group: the CUDA kernel's most query heads a
# KV head (``cuda.supported``), and a Triton program's (its [rows, D] query tile and accumulator stay in registers).
FOLD_ROWS_CUDA = 8
FOLD_ROWS_TRITON = 32


def fold_tokens(q_len: int, group: int, rows_max: int) -> int:
    """How many of a step's ``q_len`` new tokens share a query row of the kernels, so that each key tile serves all of
    them: ``group`` query heads a KV head times that many tokens fill the row's head group, at most ``rows_max``.
    A power of two, so that a generation with varying steps (assisted decoding's candidates) builds few kernels; at
    most ``q_len`` rounded up to one (the step is then front-padded with zero queries whose outputs are dropped)."""
    f = 1
    while f < q_len and group * f * 2 <= rows_max:
        f *= 2
    return f


def fold_queries(query: torch.Tensor, fold: int) -> tuple[torch.Tensor, int]:
    """``[B, HQ, Q, D]`` as the kernels' ``[B·R, HQ·F, 1, D]`` query rows (``F = fold``, ``R = ceil(Q / F)``): row
    ``b·R + r`` holds tokens ``r·F .. r·F + F - 1`` of row ``b``, token ``f`` of them as head ``hq·F + f``, after
    ``pad`` zero queries in front (returned) so that the last token stays the last."""
    b, hq, q_len, d = query.shape
    if q_len == 1:
        return query.contiguous(), 0
    pad = -q_len % fold
    if pad:
        query = torch.cat([query.new_zeros(b, hq, pad, d), query], dim=2)
    r = (q_len + pad) // fold
    # contiguous: the kernels index rows densely, and with one row a reshape can return a strided view
    return query.reshape(b, hq, r, fold, d).transpose(1, 2).reshape(b * r, hq * fold, 1, d).contiguous(), pad


def unfold_output(out: torch.Tensor, batch: int, q_len: int, fold: int, pad: int) -> torch.Tensor:
    """The kernels' ``[B·R, HQ·F, 1, D]`` output rows back to ``[B, HQ, Q, D]`` (:func:`fold_queries`'s inverse)."""
    if q_len == 1:
        return out
    rows, hqf, _, d = out.shape
    hq, r = hqf // fold, rows // batch
    return out.view(batch, r, hq, fold, d).transpose(1, 2).reshape(batch, hq, r * fold, d)[:, :, pad:].contiguous()


def decode_attn_triton(
    query: torch.Tensor,
    prefix: CompressedKV | None,
    tail_keys: torch.Tensor | None,
    tail_values: torch.Tensor | None,
    scaling: float,
    chunk: int | None = None,
    config: dict | None = None,
    spark_kernel: str | None = None,
    tail_length: torch.Tensor | None = None,
    fold: bool = True,
) -> torch.Tensor:
    """Decode attention of new tokens over a compressed prefix and a dense tail (GPU kernels, split-K).

    Same contract as :func:`sparkv.kernels.decode_attn.reference.decode_attn_ref`: one new token sees every tail
    token and each row's first ``prefix.lengths[b]`` prefix tokens; of ``Q > 1`` new tokens (a continuation, assisted
    decoding's candidates), the last ``Q`` tail tokens are theirs and query ``i`` sees the tail up to its own token.
    All of them run in one launch of the kernels. Every new token sees the whole prefix, so ``F`` of them fold into a
    query row's head group (:func:`fold_tokens`: ``G·F`` up to 8 query heads a KV head where the CUDA kernel takes the
    prefix, up to 32 where the Triton kernel does) and each key tile is read and decoded once for all ``F``; the
    prefix is read ``ceil(Q / F)`` times. In the tail each folded query is masked to the tokens up to its own.

    Args:
        query: ``[B, HQ, Q, D]`` fp16 / bf16 (fp32 too under ``TRITON_INTERPRET=1``).
        prefix: :class:`CompressedKV` with :class:`DenseKeys` or :class:`SparKKeys` (recovery ``mean``,
            ``mean_linear``, ``zero`` or ``constant``) keys, :class:`SparKPages` (read by the CUDA kernel; any other
            path unpacks them every call, with a warning), or None.
        tail_keys, tail_values: ``[B, H, ST, D]`` dense (any strides with unit last stride), or None.
        scaling: softmax scale.
        chunk: prefix tokens per split, a positive multiple of 32 (fastest a multiple of every config's ``BS``, 256
            on GPU); default from the multiprocessor count and the chosen candidate's programs per multiprocessor
            (``PROGRAMS_PER_SM``).
        config: fixed launch parameters ``{BS, EXPAND, PF, num_warps, num_stages, maxnreg}`` instead of the timed
            choice (tests, benchmarks); the split count then follows the layout's default programs per SM.
            ``EXPAND`` picks how SparK tiles are rebuilt (``EXPAND_*``; ``EXPAND_PTX`` needs a GPU), ``PF`` how many
            tiles ahead the PTX path prefetches.
        spark_kernel: which split kernel takes a SparK prefix on a GPU: ``"cuda"`` (the CUDA C++ kernel of
            :mod:`sparkv.kernels.decode_attn.cuda`; an unsupported case raises), ``"triton"`` (this module's
            kernel), or ``"auto"`` (CUDA where it supports the case and NVRTC can build it, else Triton). Default:
            the ``SPARKV_SPARK_KERNEL`` environment variable, else ``"auto"``. ``chunk`` and ``config`` apply to
            the Triton kernel only. The tail always goes through the Triton kernel; both write split partials,
            merged by the CUDA kernel's last block of each KV head (the Triton kernel runs first), or by the
            combine kernel when the CUDA kernel is not used or the partials do not fit its shared memory.
        tail_length: ``[1]`` int32/int64 tensor on the query's device: only the tail's first ``tail_length`` tokens
            are attended, the rest of its buffers is capacity. Read by the kernel, so a step captured in a CUDA graph
            stays valid as the tail grows (``sparkv.integration.graphs``); None: the whole tail.
        fold: False: one query row per new token (the prefix read once per token), for comparisons.

    Returns:
        ``[B, HQ, Q, D]`` in the query dtype.
    """
    spark_kernel = _spark_kernel_choice(spark_kernel)
    if query.dim() != 4 or query.shape[2] < 1:
        raise ValueError(f"query must be [B, HQ, Q, D] with Q >= 1, got {tuple(query.shape)}")
    b, hq, q_len, d = query.shape
    interp = interpreting()
    allowed = (torch.float16, torch.bfloat16, torch.float32) if interp else (torch.float16, torch.bfloat16)
    if query.dtype not in allowed:
        raise ValueError(f"query dtype must be one of {allowed}, got {query.dtype}")
    check_tail(query, prefix, tail_keys, tail_values, tail_length)
    check_scaling(scaling)
    if q_len > 1 and (tail_keys is None or tail_keys.shape[-2] < q_len):
        raise ValueError(f"{q_len} new tokens need their own keys as the tail's last {q_len} tokens; the tail holds "
                         f"{0 if tail_keys is None else tail_keys.shape[-2]}")
    # A given chunk: whole 32-token tiles, as the CUDA kernel's (the kernel masks a split's last tile, so a chunk
    # that some BS does not divide is correct, only slower); the default is a multiple of CHUNK_ALIGN on a GPU.
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 32 or chunk % 32):
        raise ValueError(f"chunk must be None or a positive multiple of 32, got {chunk!r}")
    align = 32 if interp else CHUNK_ALIGN
    has_tail = tail_keys is not None and tail_keys.shape[-2] > 0
    if prefix is None and not has_tail:
        raise ValueError("attention needs a prefix or a tail")
    h = prefix.num_heads if prefix is not None else tail_values.shape[1]
    g = hq // h
    dev = query.device
    for name, where in (("prefix", None if prefix is None else prefix.device),
                        ("tail_keys", None if tail_keys is None else tail_keys.device),
                        ("tail_values", None if tail_values is None else tail_values.device)):
        if where is not None and where != dev:
            raise ValueError(f"{name} is on {where}, the query on {dev}: all inputs must be on one device")
    if not isinstance(fold, bool):
        raise ValueError(f"fold must be True or False, got {fold!r}")
    spark_prefix = isinstance(prefix, SparKPages) or isinstance(getattr(prefix, "keys", None), SparKKeys)
    if interp and spark_kernel == "cuda" and spark_prefix:
        raise ValueError("spark_kernel='cuda' needs a GPU (the CUDA kernel has no interpreter); use 'auto' or 'triton'")
    cuda_may_take = spark_prefix and not interp and spark_kernel != "triton"
    f = fold_tokens(q_len, g, FOLD_ROWS_CUDA if cuda_may_take else FOLD_ROWS_TRITON) if fold else 1
    q, pad = fold_queries(query, f)
    plan = None
    if isinstance(prefix, SparKPages):
        plan = None if interp else _cuda_spark_plan(q, prefix, scaling, spark_kernel)
        if plan is None:  # pages are the CUDA kernel's form; the Triton kernel reads arrays
            _warn_pages_unpacked(dev)
            prefix = prefix.to_compressed()
    dummy = q
    tail_len = dummy if tail_length is None else tail_length

    layout, rec, dk, const = LAYOUT_NONE, REC_ZERO, 1, 0.0
    kd = kv = kb = sb = r = u = v = lens = dummy
    s = 0
    s_kd = s_v = (0, 0, 0)
    if prefix is not None and plan is None:  # (pages with a plan: the CUDA kernel reads them)
        keys = prefix.keys
        s = prefix.num_tokens
        v = prefix.values
        if v.stride(-1) != 1:
            v = v.contiguous()
        s_v = v.stride()[:3]
        lens = prefix.lengths.to(device=dev, dtype=torch.int32)
        if isinstance(keys, DenseKeys):
            layout = LAYOUT_DENSE
            kd = keys.keys if keys.keys.stride(-1) == 1 else keys.keys.contiguous()
            s_kd = kd.stride()[:3]
        elif isinstance(keys, SparKKeys):
            if keys.recovery not in _RECOVERY_IDS:
                raise ValueError(f"recovery {keys.recovery!r} is not supported by the Triton kernel; use 'torch'")
            layout, rec, dk = LAYOUT_SPARK, _RECOVERY_IDS[keys.recovery], keys.kept
            kv, kb = keys.kept_values.contiguous(), keys.kept_bits.contiguous()
            if rec != REC_ZERO:
                sb = keys.sign_bits.contiguous()
            if rec == REC_MEAN:
                r, u = keys.scale.contiguous(), keys.u.float().contiguous()
            const = float(keys.constant)
        else:
            raise ValueError(f"key layout {type(keys).__name__} is not supported by the Triton kernel; use 'torch'")
        if keys.head_dim != d:
            raise ValueError(f"query head_dim {d} != key head_dim {keys.head_dim}")
    st = tail_keys.shape[-2] if has_tail else 0
    tk = tv = dummy
    s_tk = s_tv = (0, 0, 0)
    if has_tail:
        tk = tail_keys if tail_keys.stride(-1) == 1 else tail_keys.contiguous()
        tv = tail_values if tail_values.stride(-1) == 1 else tail_values.contiguous()
        s_tk, s_tv = tk.stride()[:3], tv.stride()[:3]

    if interp and config is not None and config.get("EXPAND", EXPAND_TILE) >= EXPAND_PTX:
        raise ValueError("EXPAND_PTX needs a GPU; use EXPAND_TILE or EXPAND_GLOBAL under TRITON_INTERPRET=1")
    if layout == LAYOUT_SPARK and kv.dtype != q.dtype:
        raise ValueError(f"kept_values dtype {kv.dtype} must match the query dtype {q.dtype}")
    if layout == LAYOUT_SPARK and not interp:
        plan = _cuda_spark_plan(q, prefix, scaling, spark_kernel)
    if plan is not None:  # the CUDA kernel takes the prefix; the Triton split kernel covers the tail only
        layout, s = LAYOUT_NONE, 0
    elif cuda_may_take and fold:  # the Triton kernel takes the prefix after all: its wider fold
        f = fold_tokens(q_len, g, FOLD_ROWS_TRITON)
        q, pad = fold_queries(query, f)
    rows, gq = q.shape[0], g * f  # query rows, and query heads a KV head in each
    chunk_t = _choose_chunk(st, rows * h, dev, align, PROGRAMS_PER_SM["dense"]) if st > 0 else align
    # None: a tail alone (the CUDA kernel has the prefix)
    work = size_class(rows, h, s) if layout != LAYOUT_NONE else None

    def prepare(launch: dict, per_sm: int, lead: int = 0):
        """The split kernel's launch for ``launch`` / ``per_sm`` as a closure, with its output buffers; ``lead``
        split slots in front of its own are left to the CUDA kernel (the kernel indexes partials by the total)."""
        chunk_p = chunk or (_choose_chunk(s, rows * h, dev, align, per_sm) if s > 0 else align)
        nsp = cdiv(s, chunk_p) if s > 0 else 0
        ns = nsp + (cdiv(st, chunk_t) if st > 0 else 0)
        total = lead + ns
        o_part = torch.empty(rows * h, total, gq, d, dtype=torch.float32, device=dev)
        lse_part = torch.empty(rows * h, total, gq, dtype=torch.float32, device=dev)
        o_own, lse_own = o_part[:, lead:], lse_part[:, lead:]  # base pointers at slot `lead`

        def split_kernel():
            decode_attn_fwd_kernel[(ns, rows * h)](
                q, kd, kv, kb, sb, r, u, v, lens, tk, tv, tail_len, o_own, lse_own,
                float(scaling) * LOG2E, const,
                s, st, chunk_p, chunk_t, nsp, total, cdiv(q_len, f),
                *s_kd, *s_v, *s_tk, *s_tv,
                **shape_constexprs(h, gq, d, dk), LAYOUT=layout, RECOVERY=rec, HAS_TAIL=has_tail,
                TAIL_ON_DEVICE=tail_length is not None, USE_POPC=not interp,
                F32=interp or query.dtype == torch.float32, FOLD=f, **launch,
            )

        return split_kernel, o_part, lse_part, total

    run_triton = layout != LAYOUT_NONE or has_tail
    with launch_device(dev):  # Triton launches on the current device (a model may span GPUs)
        if config is not None:
            launch = dict(config)
            launch.setdefault("EXPAND", EXPAND_TILE if interp else EXPAND_PTX)
            launch.setdefault("BS", 16 if interp else 64)
            launch.setdefault("PF", 0 if interp else 1)
            per_sm = PROGRAMS_PER_SM["spark" if layout == LAYOUT_SPARK else "dense"]
        elif interp:
            launch, per_sm = launch_kwargs(INTERPRET_CONFIG), PROGRAMS_PER_SM["dense"]
        elif run_triton:
            key = (layout, rec, gq, f, d, dk, q.dtype, has_tail, work, dev.index)
            if key not in _TUNED:
                _TUNED[key] = _choose_launch(prepare, launch_candidates(layout, d))
            launch, per_sm = _TUNED[key]
        LAST_LAUNCH.clear()
        if plan is not None:
            from sparkv.kernels.decode_attn import cuda

            LAST_LAUNCH.update(spark_kernel="cuda", **cuda.LAST_LAUNCH)
        lead = plan.splits if plan is not None else 0
        if run_triton:
            # One set of partials: the CUDA kernel's prefix splits first, then the Triton kernel's (tail) splits.
            LAST_LAUNCH.update(launch, programs_per_sm=per_sm)
            split_kernel, o_part, lse_part, ns = prepare(launch, per_sm, lead)
        else:  # the CUDA kernel's splits alone (no tail)
            ns = lead
            o_part, lse_part = plan.partials()
        if plan is not None and plan.merges_itself(ns):
            # The tail's partials first: the CUDA kernel's last block of each KV head merges every slot.
            if run_triton:
                split_kernel()
            out = torch.empty_like(q)
            plan.launch(o_part, lse_part, out)
            LAST_LAUNCH["combine"] = "cuda"
        else:
            if plan is not None:
                plan.launch(o_part, lse_part)
            if run_triton:
                split_kernel()
            LAST_LAUNCH["combine"] = "triton"
            out = combine_partials(o_part, lse_part, q)
    LAST_LAUNCH["fold"] = f
    return unfold_output(out, b, q_len, f, pad)


__all__ = ["decode_attn_triton", "decode_attn_fwd_kernel", "decode_attn_combine_kernel", "launch_candidates"]
