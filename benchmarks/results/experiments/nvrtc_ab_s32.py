"""Session 32: one kernel source, two compilers. 0b1bf47's kernel files built by the NVRTC that torch loads on the device
(13.0, torch 2.11.0+cu130) against the same files built by NVRTC 13.5.37 (the ``nvidia-cuda-nvrtc`` wheel, as on the
CPU machine): whether ptxas 13.5 schedules the walk better at the targets' cells. Checks first (benchmarks/folder_ab.py:
the fp32 reference and the first folder, twice each, ragged rows, pages and arrays), then whole steps, five
interleaved rounds.
Command (device, carry gpu; the folders and libraries: SETUP_ONLY=1 bash prepared_nvrtc_s32.sh on the CPU machine):
  bash benchmarks/results/experiments/prepared_nvrtc_s32.sh OUT.json
Result (nvrtc_ab_s32_h200.json, H200, 2026-11-30 18:25 UTC, torch 2.11.0+cu130, triton 3.6.0, driver 580.159.04; the
libraries reported 13.0 and 13.5): NVRTC 13.5's builds load and pass every check, and are slower where the walk runs
with REC_SPREAD: 0.959x (128K·b1) and 0.963x (32K·b8) at λ = 0.5, 0.986x SmolLM2 128K·b8 λ = 0.5; 0.997-1.002x
elsewhere. Not kept: the launcher keeps the NVRTC torch loads. BENCHMARKS.md "Session 32" item 1.
"""
import ctypes
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from folder_ab import run  # noqa: E402

CASES = [(32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
         (9, 3, 64, 13, torch.bfloat16, {}), (32, 8, 128, 77, torch.bfloat16, {}), (64, 8, 128, 64, torch.bfloat16, {}),
         (16, 8, 256, 192, torch.bfloat16, {}), (32, 8, 128, 81, torch.bfloat16, {"seq": 1300})]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8, 0.4)), (32, 8, 128, 32768, 8, (0.5, 0.8)),
         (9, 3, 64, 131072, 8, (0.5, 0.8)), (32, 8, 128, 8192, 1, (0.5,))]


def versions() -> dict:
    """The NVRTC versions behind the two folders."""
    def ver(lib):
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        return f"{major.value}.{minor.value}"
    from torch.cuda import _utils as cuda_utils
    return dict(n130=ver(cuda_utils._get_nvrtc_library()), n135=ver(ctypes.CDLL(os.environ["AB_NVRTC_LIB"])))


if __name__ == "__main__":
    print("NVRTC:", versions(), flush=True)
    run(sys.argv[1:], CASES, CELLS, rounds=5)
