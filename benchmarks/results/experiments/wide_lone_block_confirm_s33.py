"""Session 33: the landed rule (`cuda.wide_lone_block`: one 7- or 6-warp block with one stage at D = 256 where the
kept term is long) against the tree before it, on cells of each branch (the walk with 7 and 6 warps, the kept MMA
with 6, λ = 0.8's walk and 8 query heads at λ = 0.5 left alone) and one D = 128 control.
Set-up (CPU): `tree` = gpu/s33/tree (665ae2d's cuda.py and spark_walk.cu), `land` = the commit's two files.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/wide_lone_block_confirm_s33.py OUT.json
  tree:gpu/s33/tree land:gpu/s33/land
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 128, torch.bfloat16, {}), (64, 8, 256, 52, torch.bfloat16, {}),
         (16, 8, 256, 103, torch.float16, {"seq": 1300}), (32, 8, 128, 64, torch.bfloat16, {})]
CELLS = [(16, 8, 256, 32768, 1, (0.5, 0.6, 0.8)), (16, 8, 256, 131072, 1, (0.5, 0.7)), (16, 8, 256, 32768, 8, (0.5,)),
         (64, 8, 256, 32768, 1, (0.5, 0.8)), (32, 8, 256, 32768, 1, (0.75,)), (32, 8, 128, 131072, 1, (0.5,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
