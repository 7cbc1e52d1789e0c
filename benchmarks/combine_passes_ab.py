"""The combine kernel's slots per pass (``BNS``): 32 against 64, in whole decode steps (split kernel(s) + combine,
CUDA-graph replays, L2 flushed by a read), three interleaved runs each, Llama and SmolLM2 heads at batch 1 (where
a step has more than 32 split slots) and 32K·b8 (where it has fewer). Every step is checked against the fp32
reference first. BENCHMARKS.md "Session 9" quotes its first run (made as a scratch copy of this script, printed
output only, with ``SPARKV_AUTOTUNE=0``).

    SPARKV_AUTOTUNE=0 PYTHONPATH=. python benchmarks/combine_passes_ab.py
    # -> benchmarks/results/experiments/combine_passes_ab_h200.json
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, parse_gpu_args, rel_err, script_parser, write_json  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, DenseKeys  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda, fused  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# (D, HQ, H, context, batch)
SHAPES = [(128, 32, 8, 131072, 1), (128, 32, 8, 32768, 1), (128, 32, 8, 8192, 1), (64, 9, 3, 131072, 1),
          (128, 32, 8, 32768, 8)]
PASSES = (32, 64)


def main() -> None:
    args = parse_gpu_args(script_parser(__doc__, RESULTS / "experiments" / "combine_passes_ab_h200.json"),
                          "combine_passes_ab.py")
    bns = [PASSES[0]]
    shipped = fused.combine_partials
    # Every step's merge, whichever path calls it, with the slots per pass of this run.
    fused.combine_partials = lambda o_part, lse_part, query: shipped(o_part, lse_part, query, bns[0])
    rows = []
    for d, hq, h, s, b in SHAPES:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=1)
        scale = d ** -0.5
        for lam in (0.0, 0.5, 0.8):
            keys = DenseKeys(k) if lam == 0 else select_pack_triton(k, stat, kept_channels(d, lam))
            prefix = CompressedKV(keys, v, lens)
            ref = decode_attn_ref(q.float(), prefix, None, None, scale, block_size=8192)

            def step(q=q, prefix=prefix, scale=scale, lam=lam):
                if lam:
                    return cuda.decode_attn_cuda(q, prefix, scale, combine="triton")
                return fused.decode_attn_triton(q, prefix, None, None, scale)

            runs: dict[int, list[float]] = {n: [] for n in PASSES}
            for rep in range(3):
                for n in PASSES:
                    bns[0] = n
                    if rep == 0 and rel_err(step(), ref) > 1e-2:
                        sys.exit(f"BNS={n} is wrong at D={d} S={s} B={b} λ={lam}")
                    runs[n].append(bench_us(step, flush="read"))
            row = dict(head_dim=d, context=s, batch=b, key_ratio=lam,
                       splits=cuda.LAST_LAUNCH.get("splits") if lam else None,
                       us={str(n): statistics.median(t) for n, t in runs.items()}, runs=runs)
            rows.append(row)
            print(f"D{d} {s // 1024}K b{b} λ={lam} splits {row['splits']}: "
                  + " ".join(f"BNS {n} {u:.1f} µs" for n, u in row["us"].items()), flush=True)
    write_json(args.out, {**environment(), "command": "SPARKV_AUTOTUNE=0 PYTHONPATH=. python "
                          "benchmarks/combine_passes_ab.py", "flush": "read", "rows": rows})


if __name__ == "__main__":
    main()
