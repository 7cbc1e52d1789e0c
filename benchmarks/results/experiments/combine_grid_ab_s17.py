# Exact script of a session-17 device call (2026-11-29 22:41 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run
# from the repository root as `SPARKV_AUTOTUNE=0 PYTHONPATH=. python benchmarks/combine_grid_ab.py --out
# $OUT/combine_grid_ab_h200.json` (it then lived in benchmarks/); kept as it ran. Its `dsplit4` (D = 128) and
# `dsplit2` (D = 64) variants are the combine kernel landed after it.
"""The combine kernel's grid and load order, in whole decode steps (CUDA split kernel + combine, CUDA-graph
replays, L2 flushed by a read), three interleaved rounds, every variant first checked against the fp32 reference.

Variants of the merge (``shipped`` is ``fused.combine_partials``):
- ``hoist``: one pass over every slot, the partials' load issued with the log-sum-exps' (no dependent round trip);
- ``dsplitN``: ``hoist`` with the D columns split over N programs per query head (N x more programs, each reading
  1/N of the partials), ``wW`` its warps.

    SPARKV_AUTOTUNE=0 PYTHONPATH=. python benchmarks/combine_grid_ab.py
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, parse_gpu_args, rel_err, script_parser, write_json  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda, fused  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# (D, HQ, H, context, batch)
SHAPES = [(128, 32, 8, 131072, 1), (128, 32, 8, 32768, 8), (128, 32, 8, 32768, 1), (64, 9, 3, 131072, 1),
          (64, 9, 3, 32768, 8)]


@triton.jit(do_not_specialize=["NS"])
def combine_hoisted_kernel(o_part, lse_part, o, NS, G: tl.constexpr, D: tl.constexpr, BD: tl.constexpr,
                           BNS: tl.constexpr):
    i_bhg = tl.program_id(0).to(tl.int64)
    i_bh, i_g = i_bhg // G, i_bhg % G
    o_j = tl.program_id(1) * BD + tl.arange(0, BD)
    m_j = o_j < D
    o_s = tl.arange(0, BNS)
    m_s = o_s < NS
    b_lse = tl.load(lse_part + (i_bh * NS + o_s) * G + i_g, mask=m_s, other=float("-inf"))
    b_o = tl.load(o_part + ((i_bh * NS + o_s[:, None]) * G + i_g) * D + o_j[None, :],
                  mask=m_s[:, None] & m_j[None, :], other=0)
    b_m = tl.max(b_lse, axis=0)
    b_w = tl.exp2(b_lse - tl.where(b_m == float("-inf"), 0.0, b_m))
    b_acc = tl.sum(b_w[:, None] * b_o, axis=0)
    tl.store(o + i_bhg * D + o_j, (b_acc / tl.sum(b_w, axis=0)).to(o.dtype.element_ty), mask=m_j)


def hoisted(dsplit: int, warps: int):
    def combine(o_part, lse_part, query):
        b, hq, _, d = query.shape
        ns = o_part.shape[1]
        out = torch.empty(b, hq, 1, d, dtype=query.dtype, device=query.device)
        bd = max(16, triton.next_power_of_2(d) // dsplit)
        combine_hoisted_kernel[(b * hq, triton.cdiv(d, bd))](
            o_part, lse_part, out, ns, G=o_part.shape[2], D=d, BD=bd, BNS=max(16, triton.next_power_of_2(ns)),
            num_warps=warps)
        return out
    return combine


def main() -> None:
    args = parse_gpu_args(script_parser(__doc__, RESULTS / "experiments" / "combine_grid_ab_h200.json"),
                          "combine_grid_ab.py")
    variants = {"shipped": fused.combine_partials, "hoist": hoisted(1, 4), "dsplit2": hoisted(2, 4),
                "dsplit4": hoisted(4, 4), "dsplit4w2": hoisted(4, 2), "dsplit8w1": hoisted(8, 1)}
    current = ["shipped"]
    fused.combine_partials = lambda o_part, lse_part, query: variants[current[0]](o_part, lse_part, query)
    rows = []
    for d, hq, h, s, b in SHAPES:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=1)
        scale = d ** -0.5
        for lam in (0.5, 0.8):
            prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
            ref = decode_attn_ref(q.float(), prefix, None, None, scale, block_size=8192)

            def step(q=q, prefix=prefix, scale=scale):
                return cuda.decode_attn_cuda(q, prefix, scale, combine="triton")

            runs: dict[str, list[float]] = {n: [] for n in variants}
            errs = {}
            for rep in range(3):
                for n in variants:
                    current[0] = n
                    if rep == 0:
                        errs[n] = rel_err(step(), ref)
                        if errs[n] > 1e-2:
                            sys.exit(f"{n} is wrong at D={d} S={s} B={b} λ={lam}: {errs[n]:.2e}")
                    runs[n].append(bench_us(step, flush="read"))
            row = dict(head_dim=d, context=s, batch=b, key_ratio=lam, splits=cuda.LAST_LAUNCH.get("splits"),
                       us={n: statistics.median(t) for n, t in runs.items()}, runs=runs, rel_err=errs)
            rows.append(row)
            base = row["us"]["shipped"]
            print(f"D{d} {s // 1024}K b{b} λ={lam} splits {row['splits']}: shipped {base:.1f} µs "
                  + " ".join(f"{n} {base / u:.3f}x" for n, u in row["us"].items() if n != "shipped"), flush=True)
    write_json(args.out, {**environment(), "command": "SPARKV_AUTOTUNE=0 PYTHONPATH=. python "
                          "benchmarks/combine_grid_ab.py", "flush": "read", "rows": rows})


if __name__ == "__main__":
    main()
