"""Session 27, prepared; run in session 28 (kept at D = 128 as QA_SMEM, ebb6c49): the recovery MMA's A operand from shared memory (QA_SMEM,
`qa_smem_s27.patch`) against the tree, at the targets' cells first.

Every build keeps the recovery's A operand (q*u/2, 8 k-steps of two registers) in 16 registers and passes it to the
MMA as {a0, 0, a2, 0}; the compiler then moves it into four consecutive registers and re-makes the zeros before each
MMA (87 IMAD.MOVs in the DK = 64 tile loop). QA_SMEM stores those four registers in shared memory once per block (D /
16 x 512 bytes: 4 KB at D = 128) and loads them with one 16-byte load a k-step, as KEPT_MMA 2 does for its own A.
The launcher sets it only where the block keeps its blocks a multiprocessor and fits the limit. Static SASS of the
tile loop (2-core CPU machine, 2026-11-30, NVRTC 13.5.37, sm_90, pages, bf16; folders from `SETUP_ONLY=1 bash
benchmarks/results/experiments/prepared_qa_smem_s27.sh`, then `python
benchmarks/results/experiments/count_tile_loop_s27.py /tmp/s27q/qa D DK G WARPS MIN_BLOCKS 2 CAP [QA_SMEM=1]`, e.g.
`... 128 64 4 4 2 2 200 QA_SMEM=1` and `... 128 26 4 8 1 2 0 QA_SMEM=1`; without QA_SMEM=1 the same build as the tree):
  D = 128, 4 query heads: DK = 64 (λ = 0.5, 4-warp blocks, cap 200) 1910 -> 1853; DK = 26 (λ = 0.8, one 8-warp block)
  1364 -> 1305, 155 -> 126 registers; DK = 96 (KEPT_MMA 2) 1765 -> 1722;
  D = 64 (SmolLM2): DK = 13 (one 8-warp block) 929 -> 902; DK = 32 1092 -> 1081;
  D = 128, 8 query heads, DK = 64 (KEPT_MMA 1): 1602 with a 24-byte stack frame -> 1464 with none, but its 4-warp block
  then no longer fits twice, so the launcher leaves QA_SMEM off there; D = 256, DK = 128: 3811 -> 3691.
Session 15 had a fifth fewer instructions at λ = 0.8 at 1.05-1.08x; the 128K·b1, λ = 0.8 target is ~0.3 % short.
Command (on the device, from the repository root): bash benchmarks/results/experiments/prepared_qa_smem_s27.sh
Run: session 28, one H200, 2026-11-30 13:11-13:14 UTC, torch 2.11.0+cu130, triton 3.6.0, main = the tree at 87b1f78
(qa_smem_ab_s27_h200.json): 25 checks passed; 128K·b1 1.017x / 1.007x (λ = 0.5 / 0.8), 32K·b8 0.996x / 1.005x,
32K·b1 and 8K·b1 1.013-1.037x, SmolLM2 0.989-1.005x, 64 / 8 heads 0.999x, D = 256 0.960x; landed at D = 128 only
(BENCHMARKS.md "Session 28" item 1).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path("benchmarks").resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from folder_ab import run  # noqa: E402
from kept_mma_ab_s26 import CASES  # noqa: E402

# the targets' cells first (Llama heads), then SmolLM2's, small caches, 8 query heads and D = 256
CELLS = ((32, 8, 128, 131072, 1, (0.8, 0.5)), (32, 8, 128, 32768, 8, (0.8, 0.5)), (32, 8, 128, 32768, 1, (0.5, 0.8)),
         (32, 8, 128, 8192, 1, (0.5, 0.8)), (9, 3, 64, 131072, 1, (0.5, 0.8)), (9, 3, 64, 32768, 8, (0.8,)),
         (64, 8, 128, 32768, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.5,)), (32, 8, 128, 131072, 1, (0.25,)))

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=5)
