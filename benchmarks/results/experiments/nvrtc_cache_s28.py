"""Session 28: can the GPU test of the spill report (test_spill_report_survives_the_devices_nvrtc_cache) fail? The
same source built three times with ptxas's report, first with session 27's options (no --no-cache), then with
cuda.nvrtc_options' (--no-cache from NVRTC 12.9): does each log hold the report?
Run: one H200, 2026-11-30 13:39 UTC, torch 2.11.0+cu130, NVRTC 13.0 (nvrtc_cache_s28.json): without --no-cache
[32, None, None], with it [32, 32, 32].
Command (on the device, from the repository root): PYTHONPATH=. python benchmarks/results/experiments/nvrtc_cache_s28.py
"""
import json
import os
import sys
import time

import torch
from torch.cuda import _utils as cuda_utils

from sparkv.kernels.decode_attn import cuda

lib = cuda_utils._get_nvrtc_library()
arch = "sm_%d%d" % torch.cuda.get_device_capability()
# a source no earlier process built: a define the kernel ignores, unique to this run
d = {**cuda.defines(128, 100, 4, "mean", torch.bfloat16, 4, 2, 2, 2, registers=200), "CACHE_PROBE": time.time_ns()}
source = cuda.kernel_source(d)
plain_options = cuda.nvrtc_options
out = {"nvrtc": cuda.nvrtc_version(lib), "arch": arch}
for label, options in (("without --no-cache", lambda a, lib, report: [o for o in plain_options(a, lib, report)
                                                                          if o != b"--no-cache"]),
                       ("with --no-cache", plain_options)):
    cuda.nvrtc_options = options
    out[label] = [cuda.stack_frame_bytes(cuda.nvrtc_build(source, cuda.KERNEL_NAME, arch, lib)[1]) for _ in range(3)]
    print(label, out[label], flush=True)
cuda.nvrtc_options = plain_options
if len(sys.argv) > 1:
    with open(os.path.join(sys.argv[1], "nvrtc_cache_s28.json"), "w") as f:
        json.dump(out, f, indent=1)
