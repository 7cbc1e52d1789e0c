"""Session 26: a block's last tiles balanced over its warps (spark_walk.cu TAIL; cuda.TAIL_TILES), against main.

Session 25's kernel timeline (`timeline_s25_h200.json`) showed the warps of one 8-warp block ending 5.8 µs apart
(median block, 128K·b1·λ=0.8) and 8.7 µs (32K·b8·λ=0.8), with no order by warp index: a block ends with its slowest
warp. In a TAIL build the last TAIL to TAIL + 7 tiles of a block's split are claimed at run time from a counter in
shared memory; each of them runs with its own softmax state, left in its own slot, and the block merges the slots in
a fixed order, so the output does not depend on which warp took which tile.

Folders hold cuda.py and spark_walk.cu: the first is the baseline (main's files), the others main's tree with the
TAIL change and `TAIL_TILES` set per folder (0 = the change present but off). Checks first: every variant against
the fp32 reference and the baseline (to rounding: the tail's states sum in another order), on ragged rows with the
default launch and with one split a row (so that the balanced tiles run), in both forms (pages, arrays), bf16 / fp16;
and each variant twice, bit-equal (claims vary between runs, the output must not). Then whole steps; both as
`benchmarks/folder_ab.py` runs them (since session 26's review; the runs below stopped on a failed check instead).
Command: PYTHONPATH=. python benchmarks/results/experiments/tail_ab_s26.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
(folders: `SETUP_ONLY=1 bash benchmarks/results/experiments/tail_s26_runs.sh`, or that script runs it).
Runs (one H200 each, 2026-11-30, main at a5583b9, torch 2.11.0+cu130; BENCHMARKS.md "Session 26" item 3):
  10:29 UTC, first build, t8 / t16 / t24: tail_ab_s26_h200.json; 0.865-0.899x at the long λ = 0.8 cells, 0.73-0.87x
        at short ones (the scale's conversion placed next to its load).
  10:37 UTC, scale kept raw, r (no tail) / t8 / t16: tail_scale_ab_s26_h200.json; r 0.995-1.008x, t8 0.988-0.999x long,
        0.891-0.953x short.
  10:40 UTC, + the cheaper merge (tail_s26.patch): tail_merge_ab_s26_h200.json; t8 0.992-1.002x long, 0.889-0.956x
        short; r 0.987-1.001x. Not kept.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

# (q heads, KV heads, head_dim, kept, dtype, SplitPlan keywords)
CASES = ((32, 8, 128, 26, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}),
         (32, 8, 128, 32, torch.bfloat16, {}), (16, 8, 128, 26, torch.bfloat16, {}),
         (9, 3, 64, 13, torch.bfloat16, {}), (32, 8, 128, 64, torch.bfloat16, {}),
         (32, 8, 128, 64, torch.bfloat16, dict(warps=8, min_blocks=1)),
         (32, 8, 128, 26, torch.bfloat16, dict(chunk=3008)),
         (32, 8, 128, 26, torch.float16, dict(chunk=1024)),
         (32, 8, 128, 90, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)),
         (9, 3, 64, 13, torch.float16, dict(chunk=3008, warps=8, min_blocks=1)),
         (64, 8, 128, 26, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)))
CELLS = ((32, 8, 128, 131072, 1, (0.5, 0.8, 0.9)), (32, 8, 128, 32768, 8, (0.5, 0.8)),
         (32, 8, 128, 32768, 1, (0.8,)), (32, 8, 128, 8192, 1, (0.8,)), (32, 8, 128, 131072, 2, (0.8,)),
         (9, 3, 64, 131072, 1, (0.8,)))

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS)
