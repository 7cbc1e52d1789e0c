"""Session 33: the kept MMA (mode 2) at D = 128 with 5-8 query heads a KV head where a token keeps at most 40
channels off 16-byte rows (DK = 26 is Llama-3.1-70B's λ = 0.8), which the walk takes: session 26 measured the MMA
0.94x there, before session 31 copied the tile's scales with its small arrays (RS_SMEM, 1.02-1.19x on the MMA's
branches). Folders: `land` (8ceef93's kernel files), `g8mma` (the same with `kept_mma_g8_short_s33.patch`: mode 2
at every DK not a multiple of 8).
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_g8_short_ab_s33.py OUT.json
  land:gpu/s33/land g8mma:gpu/s33/g8mma
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(64, 8, 128, 26, torch.bfloat16, {}), (40, 8, 128, 39, torch.float16, {"seq": 1300})]
CELLS = [(64, 8, 128, 131072, 1, (0.8, 0.9)), (64, 8, 128, 32768, 8, (0.8, 0.7)), (64, 8, 128, 32768, 1, (0.8,)),
         (40, 8, 128, 32768, 8, (0.8,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
