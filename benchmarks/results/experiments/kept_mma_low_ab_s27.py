"""Session 27: where the kept term on the tensor cores with selectors computed (session 26's candidate v4,
`kept_mma_alu_sel_s26.patch` on v3) beats the walk over small key ratios, with 1-4 query heads a KV head.

Session 27's first run (`prepared_kmma_g4_s26.sh`, kept_mma_g4_ab_s27_h200.json) had v4 at 1.235x the walk at
128K·b1, λ = 0.25 (DK = 96) and 1.069x at λ = 0.3 (DK = 90), 0.850x at λ = 0.5: this run places the crossing (λ = 0.2
to 0.4375 at D = 128, 1, 2 and 4 query heads a KV head, SmolLM2's D = 64, D = 256, 8 query heads at odd DK).
Same checks as kept_mma_ab_s26.py (its CASES), then whole steps (`benchmarks/folder_ab.py`).
Command: PYTHONPATH=. python benchmarks/results/experiments/kept_mma_low_ab_s27.py OUT.json main:<folder> v4:<folder>
(folders: `SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh` builds /tmp/s26k/base and v4).
LOW_SHAPES=edges: the second run, DK given as λ = (D - DK) / D around the first run's crossings; LOW_SHAPES=landed:
main against the landed tree (KEPT_MMA 1 and 2 in one source, `cuda.kept_mma`'s rule) and v4 over every branch of
the rule (timed out in session 27 with more checks: `landed_kmma2_s27_run.sh`); LOW_SHAPES=short: main against the
landed tree on six of those cells.
Runs (one H200 each, 2026-11-30, torch 2.11.0+cu130, triton 3.6.0; BENCHMARKS.md "Session 27" item 1), all checks
passed (max error against the fp32 reference 2.3e-3, distance to main at most 1.2e-4):
  12:04 UTC, first: kept_mma_low_ab_s27_h200.json (v4 1.02-1.28x at odd DK and DK >= 96 with 1-4 query heads);
  12:06 UTC, edges: kept_mma_edges_ab_s27_h200.json;
  12:24 UTC, short (main gpu/s27/base = 86e1e31's files, landed = the tree): kept_mma_short_ab_s27_h200.json.
"""
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from folder_ab import run  # noqa: E402
from kept_mma_ab_s26 import CASES  # noqa: E402


def at(d, *kept):
    return tuple((d - k) / d for k in kept)


FIRST = ((32, 8, 128, 131072, 1, (0.2, 0.25, 0.3, 0.35, 0.375, 0.4, 0.4375)),
         (32, 8, 128, 32768, 8, (0.25, 0.375, 0.4375)), (32, 8, 128, 32768, 1, (0.25, 0.375)),
         (32, 8, 128, 8192, 1, (0.25, 0.375)), (16, 8, 128, 131072, 1, (0.25, 0.375)),
         (32, 32, 128, 32768, 1, (0.25,)), (9, 3, 64, 131072, 1, (0.25, 0.375)),
         (64, 8, 128, 32768, 1, (0.3, 0.8)), (16, 8, 256, 32768, 1, (0.25,)))
EDGES = ((32, 8, 128, 131072, 1, at(128, 65, 69, 73, 79, 81, 82)), (32, 8, 128, 32768, 8, at(128, 73, 79, 81)),
         (32, 8, 128, 32768, 1, at(128, 79, 84)), (16, 8, 128, 131072, 1, at(128, 81, 90)),
         (64, 8, 128, 32768, 1, at(128, 45, 52, 63, 77)), (64, 8, 128, 131072, 1, at(128, 52, 90)),
         (16, 8, 256, 32768, 1, at(256, 128, 160, 180)))
LANDED = ((32, 8, 128, 131072, 1, (0.125, 0.25, 0.4, at(128, 65)[0], 0.5, 0.8)), (32, 8, 128, 32768, 8, (0.25, 0.4)),
          (16, 8, 128, 131072, 1, at(128, 81)), (32, 32, 128, 32768, 1, (0.25,)),
          (64, 8, 128, 32768, 1, at(128, 52, 90)), (64, 8, 128, 131072, 1, (0.5,)),
          (16, 8, 256, 32768, 1, (0.25,)), (32, 8, 256, 32768, 1, (0.25, 0.375)))
# the rule's branches in the checks: odd DK with 1-4 query heads, DK >= 96, 8 query heads off 16-byte rows, D = 256
LANDED_CASES = ((32, 8, 128, 77, torch.bfloat16, {}), (16, 8, 128, 65, torch.float16, dict(seq=2999)),
                (32, 32, 128, 96, torch.bfloat16, {}), (64, 8, 128, 52, torch.bfloat16, {}),
                (64, 8, 128, 90, torch.float16, dict(chunk=3008, warps=8, min_blocks=1)),
                (48, 8, 128, 45, torch.bfloat16, {}), (16, 8, 256, 192, torch.bfloat16, {}),
                (32, 8, 256, 171, torch.float16, {}), (32, 8, 128, 112, torch.bfloat16, dict(seq=3001)))
# the fourth run (the third timed out in its checks, then over 43 cases x 3 folders x 2 forms of NVRTC builds; both
# now check the rule's own cases only): main and the landed tree
SHORT = ((32, 8, 128, 131072, 1, (0.25, 0.4, at(128, 65)[0])), (64, 8, 128, 32768, 1, at(128, 52)),
         (32, 8, 256, 32768, 1, (0.25,)), (16, 8, 128, 131072, 1, at(128, 81)))
SHAPES = os.environ.get("LOW_SHAPES", "first")
CELLS = {"first": FIRST, "edges": EDGES, "landed": LANDED, "short": SHORT}[SHAPES]
if SHAPES in ("landed", "short"):
    CASES = LANDED_CASES

if __name__ == "__main__":
    run(sys.argv[1:], CASES, CELLS)
