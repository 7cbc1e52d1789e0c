"""Session 31, after RS_SMEM: the kept MMA (mode 2, with the scales copied) where `cuda.kept_mma` keeps the walk at
D = 256 (DK 128-159 with 2 and 4 query heads a KV head) and at D = 64 (SmolLM2's heads, 3 query heads a KV head, DK
32-48). Folders: `now` (7f8e63a's kernel files), `wide` (the same with `kept_mma` returning 2 from DK = 128 at D = 256
and from DK = 32 at D = 64, 1-4 query heads). Checks first (benchmarks/folder_ab.py), whole steps, 3 rounds.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_wide_ab_s31.py OUT.json
  now:gpu/s31/now wide:gpu/s31/wide
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 128, torch.bfloat16, {}), (9, 3, 64, 40, torch.bfloat16, {}), (9, 3, 64, 32, torch.float16, {})]
CELLS = [(16, 8, 256, 32768, 1, (0.5, 0.4375)), (32, 8, 256, 32768, 1, (0.5,)),
         (9, 3, 64, 131072, 1, (0.5, 0.375, 0.25)), (9, 3, 64, 32768, 8, (0.375,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
