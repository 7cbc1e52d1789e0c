"""The GPU-only decode paths (inline PTX) compile for sm_90 on a CPU-only machine (scripts/compile_sm90.py).

The Triton interpreter cannot run inline PTX, so without this CI would never see the shipped GPU code compile."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compile_sm90.py"


@pytest.mark.parametrize("args", [
    ["--expand", "2", "--bs", "32", "--stages", "3", "--maxnreg", "128"],
    ["--expand", "3", "--bs", "64", "--stages", "2", "--d", "64", "--dk", "13"],
    ["--expand", "2", "--bs", "32", "--stages", "3", "--d", "256", "--dk", "77", "--group", "2"],
    ["--expand", "2", "--bs", "16", "--warps", "1", "--stages", "3", "--d", "64", "--dk", "32", "--group", "3"],
    ["--layout", "dense", "--bs", "64", "--stages", "2"],
], ids=["ptx-d128", "ptx-tokens-d64", "ptx-d256", "ptx-one-warp-d64", "dense"])
def test_decode_kernel_compiles_for_sm90(args, tmp_path):
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("triton without its NVIDIA backend")
    res = subprocess.run([sys.executable, str(SCRIPT), *args, "--out", str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "REG:" in res.stdout and (tmp_path / "k.sass").stat().st_size > 0
    regs = int(res.stdout.split("REG:")[1].split()[0])
    assert 0 < regs <= 255
    # The tile loop was found and is the SparK rebuild (popcount ranks) or the dense tile (no popcounts).
    loop = next(line for line in res.stdout.splitlines() if line.startswith("tile loop:"))
    assert int(loop.split()[2]) > 100
    assert ("POPC" in loop) == ("dense" not in args) and "HMMA" in loop
