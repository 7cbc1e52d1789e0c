"""Session 31: with the scales copied (RS_SMEM, 1.02-1.19x on the KEPT_MMA branches), does the kept MMA (mode 2) now
beat the walk at the even DK of 66-94 with 1-4 query heads a KV head at D = 128, where `cuda.kept_mma` keeps the walk
(0.85-1.07x in session 27, without the copy)? Folders: `tree` (the rule as landed), `rule` (the tree with
`kept_mma` returning 2 at every DK >= 65 for 1-4 query heads at D = 128). Llama heads at 128K·b1 and 32K·b8, 16 query
heads over 8 at 128K·b1; λ = (128 - DK) / 128. Checks first (benchmarks/folder_ab.py), whole steps, 3 rounds.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_even_ab_s31.py OUT.json
  tree:gpu/s31/tree rule:gpu/s31/rule
The folders: SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh (a checkout with git, CPU).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

DKS = (66, 70, 72, 76, 80, 84, 88, 90, 94)
LAMS = tuple((128 - dk) / 128 for dk in DKS)
CASES = [(32, 8, 128, 72, torch.bfloat16, {}), (16, 8, 128, 80, torch.float16, {}), (32, 32, 128, 88, torch.bfloat16, {}),
         (32, 8, 128, 64, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, LAMS), (32, 8, 128, 32768, 8, LAMS), (16, 8, 128, 131072, 1, (LAMS[2], LAMS[4], LAMS[7]))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
