"""Session 33, second run of `wide_lone_block_ab_s33.py`'s folders (same set-up) on the cells the first left open:
λ 0.3 / 0.4 (the kept MMA with 2 query heads), 0.75 (DK = 64, between the first run's gain at 77 and loss at 52),
4 query heads a KV head (the walk at λ = 0.5, 0.8), 8 (the kept MMA at λ = 0.6), one KV head (Gemma-3-1B's 4 / 1),
batch 8 at λ = 0.6.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/wide_lone_block_ab2_s33.py OUT.json
  tree:gpu/s33/tree w6s1:gpu/s33/w6s1 w5s2:gpu/s33/w5s2 w7s1:gpu/s33/w7s1
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 180, torch.bfloat16, {}), (32, 8, 256, 64, torch.float16, {}),
         (4, 1, 256, 128, torch.bfloat16, {"seq": 1300})]
CELLS = [(16, 8, 256, 32768, 1, (0.3, 0.4, 0.7, 0.75)), (32, 8, 256, 32768, 1, (0.5, 0.75, 0.8)),
         (64, 8, 256, 32768, 1, (0.6,)), (4, 1, 256, 32768, 1, (0.5,)), (16, 8, 256, 32768, 8, (0.6, 0.75)),
         (16, 8, 256, 131072, 1, (0.6,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
