"""Session 29: the recovery's MMAs of a tile before its walk (`rec1`) or right after the walk's loop (`rec2`), in the
walk's region instead of after the kept scores' store and __syncwarp (`rec_first_s29.patch`, REC_FIRST = 1 / 2;
`rec2` is the same file with REC_FIRST 2), so that the MMAs' latency overlaps the walk instead of holding the scores.
The arithmetic is unchanged (outputs bit-equal to main). Static SASS of the tile loop at D = 128, DK = 64 (4 query
heads, 4-warp blocks, cap 200, QA_SMEM): main 1853, rec1 1874, rec2 1848; DK = 26 (one 8-warp block): 1305, 1327,
1327; SmolLM2's D = 64, DK = 32: 1092, 1021, 1025 (`count_tile_loop_s27.py FOLDER D DK G WARPS MINB 2 CAP
[QA_SMEM=1] REC_FIRST=N`, 2-core CPU machine, NVRTC 13.5.37). In rec1 the compiler keeps the MMAs ahead of the walk,
not interleaved with it.
Command: PYTHONPATH=. python benchmarks/results/experiments/rec_first_ab_s29.py OUT.json main:DIR rec1:DIR rec2:DIR
(`bash benchmarks/results/experiments/prepared_lam05_s29.sh recfirst OUT.json` makes the folders and runs it).
Run: one H200, 2026-11-30 14:38 UTC, torch 2.11.0+cu130, triton 3.6.0, code of f491b7b (rec_first_ab_s29_h200.json):
16 checks bit-equal; rec1 0.954-1.012x (1.007x / 1.003x at 128K·b1 / 32K·b8 λ = 0.5), rec2 0.958-1.013x; not kept
(BENCHMARKS.md "Session 29" item 4). Second run with rec3 (`rec_interleave_s29.patch`: the k-steps spread over the
walk's steps) in place of rec2 (`prepared_lam05_s29.sh interleave`), 14:50 UTC (rec_interleave_ab_s29_h200.json):
rec3 0.978-1.033x (1.029x / 1.033x at 128K·b1 / 32K·b8 λ = 0.5); kept as REC_SPREAD (622b436).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.bfloat16, {}),
         (32, 8, 128, 64, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (16, 8, 256, 128, torch.bfloat16, {}), (64, 8, 128, 64, torch.bfloat16, {}),
         (32, 8, 128, 90, torch.bfloat16, {}), (32, 8, 128, 63, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8)), (32, 8, 128, 32768, 1, (0.5,)),
         (32, 8, 128, 8192, 1, (0.5,)), (32, 8, 128, 131072, 1, (0.3,)), (9, 3, 64, 131072, 1, (0.5, 0.8))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
