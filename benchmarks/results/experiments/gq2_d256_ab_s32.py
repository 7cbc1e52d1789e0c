"""Session 32: two q-table columns (GQ = 2) at D = 256 for 1-2 query heads a KV head, where the walk runs (DK <= 128).
Session 22 measured them 1.04-1.09x at λ = 0.5 and 0.96-0.99x at λ = 0.8 with the list walk and kept 4 columns; the
kernel has changed much since (REC_SPREAD, the kept MMA above DK = 128). Folders: `tree` (b1a13a8's kernel files, the same as 3fd8ac9's),
`gq2` (the same with `gq = 2 if group <= 2 else ...`, whatever the head_dim).
Set-up (CPU): mkdir -p gpu/s32/tree gpu/s32/gq2; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} into both; in
gpu/s32/gq2/cuda.py drop `and head_dim <= 128` from the `gq = 2 if group <= 2 ...` line.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/gq2_d256_ab_s32.py OUT.json
  tree:gpu/s32/tree gq2:gpu/s32/gq2
Result (gq2_d256_ab_s32_h200.json, H200, 2026-11-30 19:04 UTC, torch 2.11.0+cu130, triton 3.6.0; 6 checks, bit-equal to
the tree): gq2 1.064-1.213x over the tree at every cell (16 / 8 heads 32K·b1: λ 0.5 1.068x, 0.6 1.086x, 0.7 1.073x, 0.8
1.127x; 32K·b8: 1.082x, 1.213x; 8 / 8 heads λ 0.5: 1.064x), so 0.76-0.86x of SDPA at λ = 0.5-0.6 and 1.06-1.54x at
0.7-0.8. Kept (05c7786). BENCHMARKS.md "Session 32" item 5.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 128, torch.bfloat16, {}), (8, 8, 256, 77, torch.float16, {}),
         (16, 8, 256, 51, torch.bfloat16, {"seq": 1300})]
CELLS = [(16, 8, 256, 32768, 1, (0.5, 0.6, 0.7, 0.8)), (16, 8, 256, 32768, 8, (0.5, 0.8)), (8, 8, 256, 32768, 1, (0.5,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
