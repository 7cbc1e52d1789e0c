"""Session 34: two warps a 32-token tile at
D = 256 (PAIR, `pair_s34.patch`), so that one block holds 8 warps with two stages of small arrays where today's
launcher takes 6 warps with one (`cuda.wide_lone_block`). Gemma-2-9B's heads (16 query / 8 KV, D = 256) at λ = 0.5
run at 0.86-0.99x of SDPA (BENCHMARKS.md "Session 34" item 2), 3.2-3.5 TB/s on their bytes against 4.1-4.5 at
D = 128; session 33 named this as the lead.
The build: warp 0 of a pair walks its tokens' top DK / 2 kept entries and takes the recovery of tokens 0-15, warp 1
the bottom half and tokens 16-31 (the same sums as one warp's two walks, so the kept and recovery terms are
bit-equal to the 4-unit build's); each warp copies only the kept values it reads and V's channel half it multiplies
(plus all the words), so neither waits on the other's copies; the kept partials and recovery sums go through shared
memory (two buffers by tile parity) with one named barrier a tile; both warps compute the same scores and softmax,
and each multiplies its half of V. Where it applies (D = 256, the walk with its word list, DK % 16 == 0,
REC_SPREAD) and fits, `launch_params` takes 8 warps (4 pairs) with PAIR_STAGES stages instead of the 7- or 6-warp
block. Shared memory at DK = 128 with 2 query heads: 229,376 bytes with two stages, 180,224 with one
(`cuda.shared_bytes`); with 4 query heads only one stage fits.
On the CPU machine (NVRTC 13.5.37, sm_90) every build compiles without spills: 204 registers at DK = 128 with 2 query
heads (two stages and one, bf16 pages, fp16 arrays), 241 at DK = 96 with 4, 202 with constant recovery.
Folders: `head` (875bb0e's cuda.py and spark_walk.cu), `pair2` (the same with `pair_s34.patch`, PAIR_STAGES = 2),
`pair1` (the patch, then PAIR_STAGES = 1 in its cuda.py).
Set-up (CPU): mkdir -p gpu/s34/head gpu/s34/pair2 gpu/s34/pair1; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu}
into each (from 875bb0e); (cd gpu/s34/pair2 && patch -p1 < ../../../benchmarks/results/experiments/pair_s34.patch),
the same in gpu/s34/pair1, then sed -i 's/^PAIR_STAGES = 2$/PAIR_STAGES = 1/' gpu/s34/pair1/cuda.py
Command (device): PYTHONPATH=. python benchmarks/results/experiments/pair_ab_s34.py OUT.json head:gpu/s34/head
  pair2:gpu/s34/pair2 pair1:gpu/s34/pair1     (carry gpu/s34; PAIR_AB_QUICK=1: the first check and three cells)
Result (one H200, 2026-11-30 21:41 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 875bb0e + the patch; the quick
mode's run, written inline as `python -c "... run([OUT, head:..., pair2:..., pair1:...], CASES[:1], QUICK_CELLS)"`,
`pair_quick_s34_h200.json`): the checks pass (relative error 2.14e-3 as the tree's, 5.0e-4 from the tree's output
since the splits differ, repeat bit-equal, pages and arrays), but the pairs are slower: 0.797-0.861x of the 6-warp
block at λ = 0.5 (32K·b8 526.3 → 653.2 / 660.2 µs, 128K·b1 275.7 → 338.5 / 341.5, 32K·b1 88.0 → 103.4 / 102.2; two
stages and one alike). Not kept (BENCHMARKS.md "Session 34" item 6).
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

# Checks (default launches, so the pairs' build where it applies): DK = 128 and 96 with 2 query heads, bf16 and
# fp16, and DK = 128 with 4 (PAIR_STAGES = 1 only; the others launch the tree's block there).
CASES = [(16, 8, 256, 128, torch.bfloat16, {}), (16, 8, 256, 128, torch.float16, {"seq": 1300}),
         (16, 8, 256, 96, torch.bfloat16, {}), (32, 8, 256, 128, torch.bfloat16, {})]
CELLS = [(16, 8, 256, 32768, 1, (0.5, 0.625)), (16, 8, 256, 32768, 8, (0.5, 0.625)),
         (16, 8, 256, 131072, 1, (0.5,)), (16, 8, 256, 8192, 1, (0.5,)), (16, 8, 256, 131072, 8, (0.5,)),
         (32, 8, 256, 32768, 1, (0.5,)), (32, 8, 128, 131072, 1, (0.5,))]

QUICK_CELLS = [(16, 8, 256, 32768, 8, (0.5,)), (16, 8, 256, 131072, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.5,))]

if __name__ == "__main__":
    quick = os.environ.get("PAIR_AB_QUICK") == "1"
    run(sys.argv[1:], CASES[:1] if quick else CASES, QUICK_CELLS if quick else CELLS, rounds=3)
