"""Session 28: the register cap where the tensor cores take the kept term, and QA_SMEM at D = 128.

Session 28's first runs (qa_smem_ab_s27_h200.json, kept_mma_landed_ab_s27_h200.json) showed the landed tree
launching KEPT_MMA builds with the 200 cap (DK = 96 with 4 query heads; DK = 64 with 8) where 86e1e31 and v4 had
launched them without it, and 3-4 % slower there. This run first prints why (each folder's launch_params and the
spill check's stack frames, with the device's NVRTC), then times main (the tree), `nocap` (no cap with KEPT_MMA)
and `cand` (nocap + QA_SMEM at D = 128, qa_smem_s27.patch with the rule narrowed) over the targets' cells and the
kept MMA's branches. Folders: gpu/s28/nocap, gpu/s28/cand: 87b1f78's cuda.py and spark_walk.cu with
cap_mma_s28.patch, and with qa_smem_s27.patch then qa_nocap_s28.patch (`patch -p4` in the folder).
Run: one H200, 2026-11-30 13:20-13:22 UTC, torch 2.11.0+cu130, triton 3.6.0, main = the tree at 87b1f78 (before
session 28's commits; cap_mma_ab_s28_h200.json): the diagnosis on this fresh machine shows the tree dropping the cap where the
capped build spills (DK = 96: 8 bytes, DK = 64 with 8 query heads: 24); nocap 0.994-1.013x (DK = 77 1.013x), cand at
the targets' cells 1.002-1.011x (BENCHMARKS.md "Session 28" items 1 and 3).
Command: PYTHONPATH=. python benchmarks/results/experiments/cap_mma_ab_s28.py OUT.json main:<tree> nocap:gpu/s28/nocap
cand:gpu/s28/cand
"""
import ctypes
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_attention import make_shape  # noqa: E402
from folder_ab import check_folders, load_folders, time_folders  # noqa: E402
from kept_mma_low_ab_s27 import LANDED_CASES  # noqa: E402

from common import environment  # noqa: E402
from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

DIAG = ((64, 8, 128, 131072, 64), (32, 8, 128, 131072, 96), (64, 8, 128, 32768, 64), (32, 8, 128, 131072, 77))
CELLS = ((32, 8, 128, 131072, 1, (0.5, 0.8, 0.25, 0.4)), (32, 8, 128, 32768, 8, (0.5, 0.8, 0.25)),
         (64, 8, 128, 131072, 1, (0.5,)), (64, 8, 128, 32768, 1, ((128 - 52) / 128, 0.5)),
         (16, 8, 256, 32768, 1, (0.25,)), (9, 3, 64, 131072, 1, (0.5,)))


def diagnose(mods):
    from torch.cuda import _utils as cuda_utils
    lib = cuda_utils._get_nvrtc_library()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    arch = "sm_%d%d" % torch.cuda.get_device_capability()
    print(f"device NVRTC {major.value}.{minor.value}, {arch}", flush=True)
    out = []
    for hq, h, d, s, dk in DIAG:
        q, k, v, stat, lens = make_shape(1, hq, h, s, d, torch.bfloat16, seed=1)
        prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, dk), v, lens))
        for n, m in mods.items():
            p, dd, why = m.launch_params(prefix, hq // h, torch.bfloat16)
            capped = {**dd, "MAXNREG": 200}
            try:
                st_c = m._stack(capped, arch, lib)
                st_u = m._stack({k2: v2 for k2, v2 in dd.items() if k2 != "MAXNREG"}, arch, lib)
                err = None
            except Exception as e:  # noqa: BLE001 - the point is to see it
                st_c = st_u = None
                err = repr(e)[:300]
            row = dict(cell=[hq, h, d, s, dk], folder=n, registers=p["registers"], maxnreg=dd.get("MAXNREG"),
                       kept_mma=dd.get("KEPT_MMA"), qa_smem=dd.get("QA_SMEM"), warps=p["warps"],
                       stack_capped=st_c, stack_uncapped=st_u, error=err, why=why)
            out.append(row)
            print("diag", row, flush=True)
        del q, k, v, prefix
    return out


if __name__ == "__main__":
    out, mods = Path(sys.argv[1]), load_folders(sys.argv[2:])
    diag = diagnose(mods)
    checks, failed = check_folders(mods, LANDED_CASES + ((32, 8, 128, 64, torch.bfloat16, {}),
                                                         (32, 8, 128, 26, torch.float16, {})))
    for n in failed:
        mods.pop(n)
    record = dict(environment(), diag=diag, checks=checks, failed=failed)
    time_folders(mods, CELLS, out, record, rounds=5)
