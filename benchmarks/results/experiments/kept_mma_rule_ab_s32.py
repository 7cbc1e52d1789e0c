"""Session 32: the widened D = 64 rule of `cuda.kept_mma` (the kept MMA with 5-8 query heads a KV head at every DK, with
1-2 from DK = 41) as landed, against the tree before it, on the points kept_mma_d64_ab_s32.py measured and one it did
not (2 query heads at DK = 44), with controls the rule leaves alone (SmolLM2's heads, the Llama λ = 0.5 target cell);
and a probe of D = 256 with 8 query heads a KV head at DK 130 and 136, the only DK there where the kept MMA's block fits
(`d256mma`: the landed files with the D = 256 rule for any group).
Folders: `now` (gpu/s32/now: the tree before, as in kept_mma_d64_ab_s32.py), `land` (the landed cuda.py and
spark_walk.cu), `d256mma` (land with `if head_dim == 256 and group <= 4:` replaced by `if head_dim == 256:`).
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_rule_ab_s32.py OUT.json
  now:gpu/s32/now land:gpu/s32/land d256mma:gpu/s32/d256mma
Result (kept_mma_rule_ab_s32_h200.json, H200, 2026-11-30 18:35 UTC, torch 2.11.0+cu130, triton 3.6.0; `land` was the
D = 64 part of 4a567d8, uncommitted then): land 1.104-1.629x over `now` with 8 and 7 query heads, 1.032x with 2 at
DK = 44; the controls 0.983x (SmolLM2's heads, the same build: the run's noise) and 0.998x (Llama λ = 0.5). d256mma at
D = 256 with 8: 1.598x / 1.623x at DK 130 / 136 (0.75-0.76x of SDPA; the walk 0.47x). BENCHMARKS.md "Session 32"
item 3.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(64, 8, 256, 130, torch.bfloat16, {}), (16, 8, 64, 44, torch.bfloat16, {}), (56, 8, 64, 13, torch.float16, {})]
CELLS = [(64, 8, 64, 32768, 1, (0.5, 51 / 64)), (14, 2, 64, 131072, 1, (0.5,)), (16, 8, 64, 131072, 1, (20 / 64,)),
         (9, 3, 64, 131072, 8, (0.5,)), (32, 8, 128, 131072, 1, (0.5,)), (64, 8, 256, 32768, 1, (126 / 256, 120 / 256))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
