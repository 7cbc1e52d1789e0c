"""Session 31, prepared and not run (the session's device time ran out): the points the widened `cuda.kept_mma` rule
(2b2cd3d) did not measure. D = 256 at DK 130 and 136 (between the measured 128, walk, and 144, MMA 1.27x), with 2 and 4
query heads a KV head; D = 64 with 1 and 2 query heads at DK 40 and 48 (left to the walk); D = 64 with 8 at DK 40
(the rule keeps the walk for more than 4). Folders: `now` (the tree), `probe` (the tree with `kept_mma` returning 2
at D = 256 from DK = 129 whatever the heads up to 4, and at D = 64 from DK = 33 for 1-8 query heads).
Set-up (CPU): mkdir -p gpu/s31n/now gpu/s31n/probe; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} into both;
in gpu/s31n/probe/cuda.py replace `if head_dim == 64 and 3 <= group <= 4:` by `if head_dim == 64:`.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/kept_mma_open_ab_s31.py OUT.json
  now:gpu/s31n/now probe:gpu/s31n/probe
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
