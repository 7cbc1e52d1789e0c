"""PROTOTYPE, compiled offline only (never run): the SparK decode loop in Gluon, with explicit layouts.

Question it answers: how much of the Triton kernel's 98.0 warp instructions per (token, KV head) is layout overhead
that explicit layouts would remove? Here the rebuilt key tile and the ±1 sign tile are produced directly in the
MMA B-operand layout (channel order permuted so that every channel a lane holds lies in one bitmap word), q and
q ⊙ u stay in registers, the softmax never leaves the warp (one warp per program) and P feeds the second MMA from
registers. It does not handle lengths, masks, tails or splits; it exists to be compiled and counted:

    python scripts/gluon_spark_tile.py [DK]     # CPU machine; prints registers and the tile loop's SASS mix

Result (2026-11-29, triton 3.6.0, sm_90, DK = 64): 77.1 warp instructions per (token, KV head) at 255 registers,
against 98.0 for the Triton kernel (`scripts/compile_sm90.py`). The per-channel rebuild (~12 instructions a channel,
the same PTX as the Triton kernel) is ~48 of the 77, so explicit layouts buy about a fifth of the instructions, and
one-warp programs at 255 registers leave the multiprocessor 8 warps (BENCHMARKS.md, "Session 4").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.experimental import gluon  # noqa: E402
from triton.experimental.gluon import language as gl  # noqa: E402
from triton.experimental.gluon.language.nvidia.ampere import mma_v2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compile_sm90 import dump, loop_summary, sm90_source  # noqa: E402

ASM = gl.constexpr("""{
.reg .pred pk, ps;
.reg .b32 w, c, k0, k1, s0, s1;
.reg .b64 a;
and.b32 w, $2, $6; setp.ne.b32 pk, w, 0;
and.b32 w, $2, $8; popc.b32 c, w; add.u32 c, c, $10;
mad.wide.u32 a, c, 2, $12;
mov.b32 k0, 0; @pk ld.global.nc.u16 k0, [a];
and.b32 w, $4, $6; setp.ne.b32 ps, w, 0; selp.b32 s0, 0x3F80, 0xBF80, ps; @pk mov.b32 s0, 0;
and.b32 w, $3, $7; setp.ne.b32 pk, w, 0;
and.b32 w, $3, $9; popc.b32 c, w; add.u32 c, c, $11;
mad.wide.u32 a, c, 2, $13;
mov.b32 k1, 0; @pk ld.global.nc.u16 k1, [a];
and.b32 w, $5, $7; setp.ne.b32 ps, w, 0; selp.b32 s1, 0x3F80, 0xBF80, ps; @pk mov.b32 s1, 0;
prmt.b32 $0, k0, k1, 0x5410;
prmt.b32 $1, s0, s1, 0x5410;
}""")


@gluon.jit
def spark_tile(q, kv, kb, sb, r, u, v, o, S, scale,
               BS: gl.constexpr, D: gl.constexpr, BG: gl.constexpr, G: gl.constexpr, DK: gl.constexpr,
               NW: gl.constexpr):
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1], instr_shape=[16, 8])
    A: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    B: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    i_bh = gl.program_id(0).to(gl.int64)
    # q and q*u in the permuted channel order: k -> channel(k) so that every k a lane holds lies in one word.
    og = gl.arange(0, BG, layout=gl.SliceLayout(1, A))
    ok = gl.arange(0, D, layout=gl.SliceLayout(0, A))
    chq = 32 * ((ok % 8) // 2) + 4 * (ok // 16) + 2 * ((ok % 16) // 8) + ok % 2
    mq = (og < G)[:, None] & (chq < D)[None, :]
    b_q = gl.load(q + (i_bh * G + og[:, None]) * D + chq[None, :], mask=mq, other=0.0)
    b_qu = (b_q.to(gl.float32) * gl.load(u + i_bh * D + chq)[None, :]).to(gl.bfloat16)
    # B-operand index tensors
    kk = gl.arange(0, D, layout=gl.SliceLayout(1, B))
    tt = gl.arange(0, BS, layout=gl.SliceLayout(0, B))
    word = ((kk % 8) // 2)[:, None]
    bit = (4 * (kk // 16) + 2 * ((kk % 16) // 8) + kk % 2)[:, None]
    b_bit = gl.full([D, BS], 1, gl.int32, layout=B) << bit
    b_low = b_bit - 1
    base = gl.full([D, BS], 0, gl.int64, layout=B) + (kv + i_bh * S * DK).to(gl.int64)
    m_i = gl.full([BG], float("-inf"), gl.float32, layout=gl.SliceLayout(1, mma))
    l_i = gl.full([BG], 0.0, gl.float32, layout=gl.SliceLayout(1, mma))
    acc = gl.zeros([BG, D], gl.float32, layout=mma)
    VB: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    vt = gl.arange(0, BS, layout=gl.SliceLayout(1, VB))
    vd = gl.arange(0, D, layout=gl.SliceLayout(0, VB))
    st = gl.arange(0, BS, layout=gl.SliceLayout(0, mma))
    for t0 in range(0, S, BS):
        t = (t0 + tt)[None, :]
        pw = i_bh * S * NW + t * NW + word
        kw = gl.load(kb + pw)
        sw = gl.load(sb + pw)
        # offset of the word's first kept value: the popcounts of the words below it (each lane loads them)
        cnt = gl.zeros([D, BS], gl.int32, layout=B)
        for w2 in gl.static_range(NW):
            ww = gl.load(kb + i_bh * S * NW + t * NW + w2)
            pc = gl.inline_asm_elementwise("popc.b32 $0, $1;", "=r,r", [ww], dtype=gl.int32, is_pure=True, pack=1)
            cnt += gl.where(word > w2, pc, 0)
        off = t * DK + cnt
        kt, sg = gl.inline_asm_elementwise(ASM, "=r,=r,r,r,r,r,r,r,r,r,r,r,l,l", [kw, sw, b_bit, b_low, off, base],
                                           dtype=(gl.bfloat16, gl.bfloat16), is_pure=True, pack=2)
        s = mma_v2(b_q, kt, gl.zeros([BG, BS], gl.float32, layout=mma))
        rec = mma_v2(b_qu, sg, gl.zeros([BG, BS], gl.float32, layout=mma))
        rr = gl.load(r + i_bh * S + t0 + st).to(gl.float32)
        s = (s + rec * rr[None, :]) * scale
        m_new = gl.maximum(m_i, gl.max(s, axis=1))
        p = gl.exp2(s - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p, axis=1)
        vv = gl.load(v + (i_bh * S + t0 + vt)[:, None] * D + vd[None, :])
        pa = gl.convert_layout(p.to(gl.bfloat16), A)
        acc = mma_v2(pa, vv, acc * alpha[:, None])
        m_i = m_new
    oo = gl.arange(0, BG, layout=gl.SliceLayout(1, mma))
    od = gl.arange(0, D, layout=gl.SliceLayout(0, mma))
    gl.store(o + (i_bh * BG + oo[:, None]) * D + od[None, :], acc / l_i[:, None])


def main() -> None:
    dk = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    pointers = {"q": "*bf16", "kv": "*bf16", "kb": "*i32", "sb": "*i32", "r": "*bf16", "u": "*fp32", "v": "*bf16",
                "o": "*fp32"}
    src = sm90_source(spark_tile, pointers, dict(BS=16, D=128, BG=16, G=4, DK=dk, NW=4), floats=("scale",),
                      source_cls=gluon._runtime.GluonASTSource)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=1, num_stages=1))
    usage, sass = dump(kernel, Path("runs/gluon_sm90"))
    print(usage)
    print(loop_summary(sass, warps=1, tokens=16))


if __name__ == "__main__":
    main()
