"""Session 29: `pipe_s29.patch` (PIPE, an experiment): tile t's softmax and P·V run inside tile t + 1's walk, spread
over its steps (the softmax at its first step, V(t)'s wait at the second, one P·V MMA pair a step after it, then the
copies of V(t + 1)), where a build has two stages and walks; the V buffer starts zeroed so that a warp's first tile
has an empty predecessor. The rescale of the accumulator is unconditional (x 1.0 is exact), so no branch sits in
the walk. Outputs should be bit-equal to the tree's. Checks (`benchmarks/folder_ab.py`), then whole steps at the
targets' cells, three interleaved rounds.
Command: PYTHONPATH=. python benchmarks/results/experiments/pipe_ab_s29.py OUT.json head:DIR pipe:DIR
Run: one H200, 2026-11-30 15:29 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 796d895 + the patch
(pipe_ab_s29_h200.json): 8 checks bit-equal; 0.920x / 0.921x at 128K·b1 / 32K·b8 λ = 0.5, 0.967x / 0.980x at λ = 0.8;
not kept (BENCHMARKS.md "Session 29" item 8).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (32, 8, 128, 84, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
