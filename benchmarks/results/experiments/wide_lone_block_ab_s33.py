"""Session 33: wider lone blocks at D = 256. There a 4-warp block fills a multiprocessor's shared memory (its 16 KB V
tile a warp), so each scheduler has one warp, and an 8-warp block does not fit below λ ≈ 0.7 (`cuda.lone_block`).
Blocks of 5 warps with two stages of small arrays, or 6-7 warps with one, do fit (`cuda.shared_bytes`, CPU).
Folders: `tree` (HEAD's kernel files), and `w5s2`, `w6s1`, `w7s1`, `w8s1` (the tree with
`wide_lone_block_s33.patch`, `WIDE_TRY` set to ((5, 2),), ((6, 1),), ((7, 1),), ((8, 1), (6, 1))): where a 4-warp
block fits once and `lone_block` does not take 8 warps, the first (warps, stages) of WIDE_TRY whose block fits is
launched (the list walk kept where it fits: the patch lets WALK_LIST past 4 warps).
Set-up (CPU): mkdir -p gpu/s33/tree; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/s33/tree/; for each
variant V copy the tree to gpu/s33/V, `patch gpu/s33/V/cuda.py benchmarks/results/experiments/wide_lone_block_s33.patch`
and set WIDE_TRY in it.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/wide_lone_block_ab_s33.py OUT.json
  tree:gpu/s33/tree w5s2:gpu/s33/w5s2 w6s1:gpu/s33/w6s1 w7s1:gpu/s33/w7s1 w8s1:gpu/s33/w8s1
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 128, torch.bfloat16, {}), (8, 2, 256, 102, torch.float16, {}),
         (16, 8, 256, 77, torch.bfloat16, {"seq": 1300}), (64, 8, 256, 52, torch.bfloat16, {})]
CELLS = [(16, 8, 256, 32768, 1, (0.5, 0.6, 0.7, 0.8)), (16, 8, 256, 32768, 8, (0.5, 0.8)),
         (16, 8, 256, 131072, 1, (0.5, 0.8)), (16, 8, 256, 8192, 1, (0.5,)), (8, 2, 256, 32768, 4, (0.5, 0.6)),
         (64, 8, 256, 32768, 1, (0.8,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
