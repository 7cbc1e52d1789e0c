"""Session 28: does the launcher's spill check (cuda.without_added_spills) depend on what ran before it? In
landed_kmma2_s27_run.sh (session 28, 13:16 UTC) the tree's folder launched KEPT_MMA builds at DK = 96 (4 query heads)
and DK = 64 (8) with the 200 cap although their capped builds spill (8 and 24 bytes, device NVRTC 13.0), while a
fresh process (cap_mma_ab_s28.py, 13:20 UTC) dropped it. This runs the same checks as that run first (LANDED_CASES,
same folders), then cap_mma_ab_s28.py's diagnosis.
Run: one H200, 2026-11-30 13:23 UTC (cap_order_s28_h200.json): after the checks the tree's folder found no ptxas
report for either build (stack None) and kept the cap; 86e1e31's and v4's folders, whose sources that machine had not
built before, found theirs. Cause: NVRTC's cache (BENCHMARKS.md "Session 28" item 2).
Command: PYTHONPATH=. python benchmarks/results/experiments/cap_order_s28.py OUT.json main:gpu/s27/base
landed:<tree> v4:gpu/s27/v4
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path("benchmarks").resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cap_mma_ab_s28 import diagnose  # noqa: E402
from folder_ab import check_folders, load_folders  # noqa: E402
from kept_mma_low_ab_s27 import LANDED_CASES  # noqa: E402

from common import environment  # noqa: E402

if __name__ == "__main__":
    out, mods = Path(sys.argv[1]), load_folders(sys.argv[2:])
    checks, failed = check_folders(mods, LANDED_CASES)
    diag = diagnose(mods)
    out.write_text(json.dumps(dict(environment(), checks=checks, failed=failed, diag=diag), indent=1))
