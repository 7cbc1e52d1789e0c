"""Session 26: the kept term on the tensor cores (spark_walk.cu KEPT_MMA) against the walk (main's kernel files).

The walk costs ~14 instructions a kept entry, GQ of them FMAs (8 with 5-8 query heads a KV head). KEPT_MMA builds
each lane's B registers (kept values at their channels) by nibbles of its token's bitmap word from a 4-value window
of the kept row and two byte permutes, and takes the kept term with one m16n8k16 MMA per 16 channels and 8 tokens:
~18 instructions a nibble whatever the head count (static SASS of the tile loop at D = 128, DK = 64, 4 query heads:
1474-1573 against the walk's 1910; `kept_mma_count_s26.py` on the 2-core CPU machine, NVRTC 13.5.37).
Checks, then whole steps, as `benchmarks/folder_ab.py` runs them (a variant failing a check is reported under "failed"
and not timed; the session 26 runs had none).
Command: PYTHONPATH=. python benchmarks/results/experiments/kept_mma_ab_s26.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
KMMA_SHAPES=g4 (default: Llama heads, 2, 4 and 8 query heads a KV head), g8 (5-8 query heads a KV head) or g4b
(session 27's candidates over λ = 0.25-0.8: `bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh`).
Folders hold cuda.py and spark_walk.cu: main's (a5583b9), and the tree with KEPT_MMA; for the first run its rule
was widened to every D = 128, DK % 8 == 0 case (`kept_mma_all_s26.patch` on the landed tree).
Runs (one H200 each, 2026-11-30, torch 2.11.0+cu130; BENCHMARKS.md "Session 26" item 1):
  10:47 UTC, KMMA_SHAPES=g4, main / kmma (every D = 128, DK % 8 == 0): kept_mma_ab_s26_h200.json; 34 checks passed;
        4 query heads a KV head 0.77-0.91x, 2 0.83x, 8 1.32x.
  10:51 UTC, KMMA_SHAPES=g8, main / kmma8 (the landed rule, 5-8 query heads): kept_mma8_ab_s26_h200.json; 34 checks
        passed; λ = 0.5 1.11-1.63x (8) and 1.46x (6), λ = 0.75 0.99-1.06x, 4 query heads (no KEPT_MMA) 1.003x.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

# (q heads, KV heads, head_dim, kept, dtype, SplitPlan keywords; seq: the first row's length)
CASES = ((32, 8, 128, 26, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}),
         (32, 8, 128, 32, torch.bfloat16, {}), (16, 8, 128, 26, torch.bfloat16, {}),
         (9, 3, 64, 13, torch.bfloat16, {}), (32, 8, 128, 64, torch.bfloat16, {}),
         (32, 8, 128, 64, torch.bfloat16, dict(warps=8, min_blocks=1)),
         (32, 8, 128, 26, torch.bfloat16, dict(chunk=3008)),
         (32, 8, 128, 26, torch.float16, dict(chunk=1024)),
         (32, 8, 128, 90, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)),
         (9, 3, 64, 13, torch.float16, dict(chunk=3008, warps=8, min_blocks=1)),
         (64, 8, 128, 26, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)),
         (64, 8, 128, 64, torch.float16, {}), (16, 8, 128, 64, torch.bfloat16, {}),
         (32, 8, 128, 128, torch.bfloat16, {}), (32, 8, 128, 8, torch.float16, {}),
         (32, 8, 128, 40, torch.bfloat16, {}), (32, 8, 128, 90, torch.float16, {}),
         (32, 8, 128, 52, torch.bfloat16, {}), (32, 8, 128, 96, torch.bfloat16, {}),
         (32, 8, 128, 63, torch.float16, dict(seq=3001)),
         (64, 8, 128, 25, torch.bfloat16, dict(seq=2999)), (16, 8, 256, 51, torch.bfloat16, {}),
         (64, 8, 256, 128, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}))
CELLS = {
    "g4": ((32, 8, 128, 131072, 1, (0.5, 0.75, 0.8)), (32, 8, 128, 32768, 8, (0.5,)), (32, 8, 128, 32768, 1, (0.5,)),
           (32, 8, 128, 8192, 1, (0.5,)), (64, 8, 128, 32768, 1, (0.5,)), (16, 8, 128, 32768, 1, (0.5,))),
    # next session's candidates (kept_mma_g4_*_s26.patch): 2-8 query heads a KV head over key ratios
    "g4b": ((32, 8, 128, 131072, 1, (0.25, 0.3, 0.5, 0.625, 0.8)), (32, 8, 128, 32768, 8, (0.3, 0.5)),
            (32, 8, 128, 32768, 1, (0.5,)), (32, 8, 128, 8192, 1, (0.5,)), (16, 8, 128, 32768, 1, (0.5,)),
            (64, 8, 128, 32768, 1, (0.5,)), (9, 3, 64, 131072, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.5,))),
    "g8": ((64, 8, 128, 131072, 1, (0.5, 0.75)), (64, 8, 128, 32768, 8, (0.5, 0.75)),
           (64, 8, 128, 32768, 1, (0.5, 0.75)), (64, 8, 128, 8192, 1, (0.5,)), (48, 8, 128, 32768, 1, (0.5,)),
           (32, 8, 128, 32768, 1, (0.5,))),
}[os.environ.get("KMMA_SHAPES", "g4")]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS)
