"""Session 34: is the λ = 0.8 step at the targets' cells slower on 875bb0e than on 622b436, or was the run's machine?
Session 34's table on 875bb0e (`decode_attention_h200_s34.json` and `_second`) had Llama-3.1-8B's 8-warp λ = 0.8 rows
1.3-1.8 % slower than session 29's table on 622b436 (128K·b1: 92.9 / 92.7 µs against 91.7 / 91.5, 1.397x / 1.394x of
SDPA), λ = 0.5 equal and the dense rows 1.3-1.8 % faster at 32K·b8 and 128K·b8. Both trees' final defines and SASS for
those builds are identical on the CPU machine's NVRTC 13.5.37 (CPU, 2026-11-30). This runs both trees' kernel files
in one run on one machine, interleaved.
Folders: `old` (622b436's cuda.py and spark_walk.cu), `head` (875bb0e's).
Set-up (CPU): mkdir -p gpu/s34/old gpu/s34/head; git show 622b436:sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu}
into gpu/s34/old; HEAD's into gpu/s34/head.
Command (device): PYTHONPATH=. python benchmarks/results/experiments/l08_same_run_s34.py OUT.json old:gpu/s34/old
  head:gpu/s34/head
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 26, torch.bfloat16, {}), (32, 8, 128, 26, torch.bfloat16, {"warps": 8, "min_blocks": 1})]
CELLS = [(32, 8, 128, 131072, 1, (0.8, 0.5)), (32, 8, 128, 32768, 8, (0.8,))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=5)
