"""Session 32: the kept term on the tensor cores (KEPT_MMA 2) against the walk at D = 64 with more than 4 query heads a
KV head, where kept_mma_open_ab_s31.py found the walk 1.78x slower (64 query heads, 8 KV heads, DK = 40): 5-8 query
heads a KV head (Qwen2.5-0.5B's 14 / 2 among them) over DK 13-48. Folders: `now` (the tree: the walk at D = 64 but with
3-4 query heads above DK = 32), `d64mma` (the tree with `kept_mma` returning 2 at D = 64 for every DK and group).
Set-up (CPU): mkdir -p gpu/s32/now gpu/s32/d64mma; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} into both;
in gpu/s32/d64mma/cuda.py replace `if head_dim == 64 and 3 <= group <= 4:` and its `return 2 if kept > 32 else 0`
by `if head_dim == 64:` and `return 2`.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_d64_ab_s32.py OUT.json
  now:gpu/s32/now d64mma:gpu/s32/d64mma
Result (kept_mma_d64_ab_s32_h200.json, H200, 2026-11-30 18:33 UTC, torch 2.11.0+cu130, triton 3.6.0): the kept MMA
1.090-1.959x over the walk at every point (1.09-1.10x at DK 13, 1.39-1.42x at 26, 1.54-1.74x at 32, 1.78-1.81x at 40,
1.94-1.96x at 48), 0.919-1.135x of SDPA against the walk's 0.474-1.041x. Kept (4a567d8). BENCHMARKS.md "Session 32"
item 3.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(64, 8, 64, 13, torch.bfloat16, {}), (14, 2, 64, 32, torch.bfloat16, {}), (48, 8, 64, 26, torch.float16, {}),
         (40, 8, 64, 45, torch.bfloat16, {})]
LAMS = (51 / 64, 38 / 64, 32 / 64, 24 / 64, 16 / 64)  # DK 13, 26, 32, 40, 48
CELLS = [(64, 8, 64, 32768, 1, LAMS), (14, 2, 64, 131072, 1, LAMS), (14, 2, 64, 32768, 8, (32 / 64, 51 / 64)),
         (48, 8, 64, 32768, 1, (32 / 64, 24 / 64)), (40, 8, 64, 32768, 1, (32 / 64, 24 / 64))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
