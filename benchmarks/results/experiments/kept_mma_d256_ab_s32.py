"""Session 32: the kept MMA at D = 256 with 5-8 query heads a KV head at every DK (kept_mma_rule_ab_s32.py measured it
1.60-1.62x over the walk at DK 130 and 136 with 8): DK 32, 64, 100 and 128 with 8 and 5, and 136 again.
Folders: `land` (gpu/s32/land, as in kept_mma_rule_ab_s32.py: the walk at D = 256 with more than 4 query heads a KV
head), `d256all` (land with `if head_dim == 256: return 2` after its D = 256 rule for 1-4, so every DK with 5-8).
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_d256_ab_s32.py OUT.json
  land:gpu/s32/land d256all:gpu/s32/d256all
Result (kept_mma_d256_ab_s32_h200.json, H200, 2026-11-30 18:40 UTC, torch 2.11.0+cu130, triton 3.6.0): 1.096-1.623x
over the walk at every point (DK 32 1.30x, 64 1.10x, 100 1.44x, 128 1.47-1.48x, 136 1.62x), 0.69-0.81x of SDPA against
the walk's 0.47-0.71x. Kept (4a567d8). BENCHMARKS.md "Session 32" item 3.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(64, 8, 256, 64, torch.bfloat16, {}), (40, 8, 256, 100, torch.float16, {}), (48, 8, 256, 33, torch.bfloat16, {})]
CELLS = [(64, 8, 256, 32768, 1, (0.5, 0.75, 0.875, 120 / 256)), (40, 8, 256, 32768, 1, (0.5, 156 / 256)),
         (64, 8, 256, 8192, 4, (0.5,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
