"""The GPU benchmark scripts fail clearly without a GPU instead of timing the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_ab_decode_refuses_without_cuda():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_decode.py")], capture_output=True, text=True, check=False,
                         timeout=120, env=env, cwd=ROOT)
    assert res.returncode != 0
    assert "needs CUDA" in res.stderr
