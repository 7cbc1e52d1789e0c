"""Session 31: the next tile's scale copied with its small arrays (session 24's `scale_smem_s24.patch`) where the
tensor cores take the kept term. Nsight Compute put 19 % of KEPT_MMA 2's warp samples at 128K·b1, λ = 0.5 on one
instruction, the scale's conversion, placed 7 instructions after its load (the walk's build: 5.7 %, the load sunk into
the walk). Folders: `head` the tree, `headsm` + scale_smem, `kmma3` + kept_mma3_s31.patch, `kmma3sm` both. Cells:
Llama heads at 128K·b1 for λ = 0.5 (DK 64: the walk in the tree, KEPT_MMA 3 in kmma3), 0.25 (DK 96: KEPT_MMA 2 in
the tree, 3 in kmma3) and 0.4 (DK 77: KEPT_MMA 2 in both), 32K·b8 at λ = 0.5, and 64 query heads at 32K·b1, λ = 0.5
(KEPT_MMA 1 in all). Checks first (benchmarks/folder_ab.py), then whole steps, three interleaved rounds.
Set-up (a checkout with git, CPU): SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_s31.sh
Command (device, carry gpu/): PYTHONPATH=. python benchmarks/results/experiments/kmma_scale_ab_s31.py OUT.json
  head:gpu/s31/head headsm:gpu/s31/headsm kmma3:gpu/s31/kmma3 kmma3sm:gpu/s31/kmma3sm
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (32, 8, 128, 84, torch.bfloat16, {}), (32, 8, 128, 96, torch.bfloat16, {}), (64, 8, 128, 64, torch.bfloat16, {}),
         (32, 8, 128, 77, torch.float16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.25, 0.4)), (32, 8, 128, 32768, 8, (0.5,)), (64, 8, 128, 32768, 1, (0.5,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
