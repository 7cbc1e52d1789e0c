"""Session 28: the NVRTC log the spill check reads, for the tree's DK = 96 (4 query heads) build with the 200 cap,
in a fresh process and after cap_order_s28.py's checks (where the check found no ptxas report).
Run: one H200, 2026-11-30 13:24 UTC (cap_log_s28.txt): the log held only the compiler's warnings, in the fresh
process too (the source had been built on that machine by earlier processes), so NVRTC's cache, not the checks.
Command: PYTHONPATH=. python benchmarks/results/experiments/cap_log_s28.py main:gpu/s27/base landed:<tree> v4:gpu/s27/v4
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_attention import make_shape  # noqa: E402
from folder_ab import check_folders, load_folders  # noqa: E402
from kept_mma_low_ab_s27 import LANDED_CASES  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def show(m, d, lib, what):
    cubin, log = m.nvrtc_build(m.kernel_source(d), m.KERNEL_NAME, "sm_90", lib)
    print(f"--- {what}: {len(log)} chars, stack {m.stack_frame_bytes(log)}\n{log[-1500:]}", flush=True)


if __name__ == "__main__":
    from torch.cuda import _utils as cuda_utils
    lib = cuda_utils._get_nvrtc_library()
    mods = load_folders(sys.argv[1:])
    m = mods["landed"]
    q, k, v, stat, lens = make_shape(1, 32, 8, 8192, 128, torch.bfloat16, seed=1)
    prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, 96), v, lens))
    d = {**m.defines(128, 96, 4, "mean", torch.bfloat16, 4, 2, 2, 2, records=True), "MAXNREG": 200}
    show(m, d, lib, "fresh")
    check_folders(mods, LANDED_CASES)
    show(m, d, lib, "after the checks")
    p, dd, _ = m.launch_params(prefix, 4, torch.bfloat16)
    print("launch_params:", p, dd == d, {k2: (dd.get(k2), d.get(k2)) for k2 in set(dd) | set(d) if dd.get(k2) != d.get(k2)})
