"""Session 33, prepared; run in session 34 (one H200, 2026-11-30 21:15 UTC, torch 2.11.0+cu130, triton 3.6.0,
code of 875bb0e, `rs_block_ab_s33_h200.json`): not kept, the two 4-warp blocks ran at 0.858-0.928x of the one 8-warp
block at λ = 0.5 (BENCHMARKS.md "Session 34" item 3). The variant: the tile's scales copied with its small arrays
(RS_SMEM) only where that costs no block a multiprocessor. With 5-8 query heads a KV head at D = 128 and DK = 64
(Llama-3.1-70B's λ = 0.5), a 4-warp block on pages takes 120,576 bytes with RS_SMEM and QA_SMEM and fits an H200
multiprocessor once, so `cuda.lone_block` launches one 8-warp block (204,032 bytes); without RS_SMEM (and so without
QA_SMEM, `with_query_operand_shared`) it takes 115,456 and two 4-warp blocks fit at the 200-register cap, the
launch of Llama-3.1-8B's cells (`cuda.shared_bytes`, CPU). Llama-3.1-70B's λ = 0.5 rows run at 1.06-1.12x of SDPA at
the large shapes (`decode_attention_h200_models_8ceef93.json`), below Llama-3.1-8B's 1.12-1.17x.
On the CPU machine's NVRTC 13.5.37 the 4-warp build without RS_SMEM has a 24-byte stack frame at the 200 cap
(`count_tile_loop_s27.py gpu/s33/rsfree 128 64 8 4 2 2 200 RS_SMEM=0`; none with it), so `without_added_spills` may
take the uncapped build there (two blocks still fit at 255 registers); the run's JSON records the launch.
Folders: `head` (471c1b9's kernel files), `rsfree` (the same with `rs_block_s33.patch`).
Set-up (CPU): mkdir -p gpu/s33/head gpu/s33/rsfree; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} into both
(from 471c1b9); patch gpu/s33/rsfree/cuda.py benchmarks/results/experiments/rs_block_s33.patch
Command (device): PYTHONPATH=. python benchmarks/results/experiments/rs_block_ab_s33.py OUT.json
  head:gpu/s33/head rsfree:gpu/s33/rsfree
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(64, 8, 128, 64, torch.bfloat16, {}), (48, 8, 128, 72, torch.float16, {"seq": 1300})]
CELLS = [(64, 8, 128, 131072, 1, (0.5, 0.45)), (64, 8, 128, 32768, 8, (0.5,)), (64, 8, 128, 131072, 8, (0.5,)),
         (64, 8, 128, 32768, 1, (0.5,)), (48, 8, 128, 32768, 8, (0.5,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
