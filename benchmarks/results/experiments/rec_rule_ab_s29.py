"""Session 29: where the recovery's k-steps spread over the walk (`rec_interleave_s29.patch`, REC_FIRST 3) gain, to set
its rule: main against that build (`rec3`) over key ratios at D = 128 (DK 96-13: the walk's even DKs up to 94, odd
DK below 65; odd DK from 65 and DK >= 96 take the kept MMA, where the patch changes nothing), with 1, 2, 4 and 8 query
heads a KV head, D = 64 and D = 256, batch 1 and 8. Checks first (`benchmarks/folder_ab.py`: the fp32 reference and
main, twice each), then whole steps, three interleaved rounds.
Command: PYTHONPATH=. python benchmarks/results/experiments/rec_rule_ab_s29.py OUT.json main:DIR rec3:DIR
(`bash benchmarks/results/experiments/prepared_lam05_s29.sh rule OUT.json`).
Run: one H200, 2026-11-30 14:53 UTC, torch 2.11.0+cu130, triton 3.6.0, code of f491b7b (rec_rule_ab_s29_h200.json):
16 checks bit-equal; rec3 0.977-1.096x: λ = 0.5 1.022x (128K·b1), 1.062x (32K·b8), 0.990x (128K·b8); losses at DK 80
and 90 of 128 (0.993x, 0.977x), so the landed rule (622b436) spreads where DK <= D / 2 (BENCHMARKS.md "Session 29"
item 5).
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 84, torch.bfloat16, {}), (32, 8, 128, 72, torch.bfloat16, {}),
         (32, 8, 128, 52, torch.float16, {}), (16, 8, 128, 64, torch.bfloat16, {}),
         (32, 32, 128, 64, torch.bfloat16, {}), (16, 8, 256, 128, torch.bfloat16, {}),
         (32, 8, 256, 64, torch.bfloat16, {}), (9, 3, 64, 13, torch.bfloat16, {})]
CELLS = [(32, 8, 128, 131072, 1, (0.3, 0.34375, 0.375, 0.4375, 0.5, 0.55, 0.6, 0.7, 0.75, 0.8, 0.9)),
         (32, 8, 128, 32768, 8, (0.375, 0.4375, 0.5, 0.6)),
         (32, 8, 128, 131072, 8, (0.5,)), (32, 8, 128, 8192, 8, (0.5,)),
         (16, 8, 128, 32768, 1, (0.5, 0.8)), (32, 32, 128, 32768, 1, (0.5,)),
         (16, 8, 256, 32768, 1, (0.5, 0.75)), (9, 3, 64, 32768, 8, (0.5, 0.8)), (9, 3, 64, 131072, 1, (0.3, 0.6))]

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS, rounds=3)
