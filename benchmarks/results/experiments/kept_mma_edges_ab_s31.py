"""Session 31, after kept_mma_even_ab_s31.py: the kept MMA (mode 2, with the scales copied) at DK = 64 (λ = 0.5, the
targets' cells, where the walk runs) and at the even DK of 72-90 with one and two query heads a KV head. Folders:
`tree` (the rule as landed), `m64` (the tree with `cuda.kept_mma` returning 2 at every DK >= 64 for 1-4 query heads at
D = 128). Checks first (benchmarks/folder_ab.py), whole steps, 3 rounds.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_edges_ab_s31.py OUT.json
  tree:gpu/s31/tree m64:gpu/s31/m64
The folders: SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh (a checkout with git, CPU).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 32, 128, 80, torch.float16, {}), (16, 8, 128, 72, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5,)), (32, 8, 128, 32768, 8, (0.5,)), (16, 8, 128, 131072, 1, (0.5,)),
         (32, 32, 128, 32768, 1, (0.4375, 0.375, 0.296875)), (16, 8, 128, 32768, 8, (0.4375, 0.375))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
