"""Session 29: session 24's `scale_defer_s24.patch` (the next tile's scale kept as its 16 loaded bits and converted when
its tile starts) on the tree with REC_SPREAD (622b436 and its review). Nsight Compute of that tree at 128K·b1, λ = 0.5
(`bash benchmarks/results/ncu/s29_ncu_sass_stalls_128k.sh`) has 603 of 11,655 warp-state samples (5.2 %) waiting on
global memory at one instruction, the scale's conversion `IMAD.U32 R, R, 0x10000` placed right after its load, as
session 26 found in the TAIL build. Checks (`benchmarks/folder_ab.py`: the fp32 reference and the first folder), then
whole steps at the targets' cells, three interleaved rounds.
Command: PYTHONPATH=. python benchmarks/results/experiments/scale_defer_ab_s29.py OUT.json head:DIR defer:DIR
Run: one H200, 2026-11-30 15:19 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 796d895 (scale_defer_ab_s29_h200.json):
8 checks bit-equal; defer 0.997x / 0.996x at 128K·b1 / 32K·b8 λ = 0.5, 0.992x / 0.997x at λ = 0.8; not kept
(BENCHMARKS.md "Session 29" item 7).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (32, 8, 128, 84, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
