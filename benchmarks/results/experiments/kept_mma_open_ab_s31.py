"""Session 31 prepared it (the session's device time ran out); session 32 ran it: the points the widened `cuda.kept_mma`
rule (2b2cd3d) did not measure. D = 256 at DK 130 and 136 (between the measured 128, walk, and 144, MMA 1.27x), with 2
and 4 query heads a KV head; D = 64 with 1 and 2 query heads at DK 40 and 48 (left to the walk); D = 64 with 8 at DK 40
(the rule keeps the walk for more than 4). Folders: `now` (0b1bf47's kernel files: the kept MMA at D = 256 from
DK = 129 with 1-4 query heads, at D = 64 from DK = 33 with 3-4), `probe` (the same with the walk at D = 256 for 1-4,
and the kept MMA at D = 64 from DK = 33 for any group). Session 31's docstring had `probe` take the MMA at D = 256,
which `now` already did; session 32 made `probe` the walk there so that the two differ.
Set-up (CPU): mkdir -p gpu/s31n/now gpu/s31n/probe; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} into both
(0b1bf47's); in gpu/s31n/probe/cuda.py replace the D = 256 rule's `return 2 if kept > 128 else 0` by `return 0` and
`if head_dim == 64 and 3 <= group <= 4:` by `if head_dim == 64:`.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_open_ab_s31.py OUT.json
  now:gpu/s31n/now probe:gpu/s31n/probe
Result (kept_mma_open_ab_s31_h200.json, H200, 2026-11-30 18:28 UTC, torch 2.11.0+cu130, triton 3.6.0): D = 256 at DK
130 / 136, the MMA 1.15-1.17x over the walk (0.79-0.81x of SDPA); D = 64 with 1-2 query heads, 0.994-1.002x at DK 40
and 1.071-1.074x at DK 48; with 8 at DK 40, 1.78x. BENCHMARKS.md "Session 32" item 2.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(16, 8, 256, 136, torch.bfloat16, {}), (8, 8, 64, 40, torch.bfloat16, {}), (64, 8, 64, 48, torch.float16, {})]
CELLS = [(16, 8, 256, 32768, 1, (126 / 256, 120 / 256)), (32, 8, 256, 32768, 1, (126 / 256, 120 / 256)),
         (8, 8, 64, 131072, 1, (24 / 64, 16 / 64)), (16, 8, 64, 131072, 1, (24 / 64, 16 / 64)),
         (64, 8, 64, 32768, 1, (24 / 64,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
