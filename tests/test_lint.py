"""The repository passes its own lint configuration (``[tool.ruff]`` in pyproject.toml), so CI catches a regression
(ruff comes with the test extras)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_passes_on_the_repository():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                         text=True, check=False, timeout=300, cwd=ROOT)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
