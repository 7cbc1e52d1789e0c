"""Session 23 probe: what the merge of the splits costs a whole step, and whether a cluster of all of a row's split
blocks could be resident at once (the precondition for merging through distributed shared memory).

(a) cuOccupancyMaxActiveClusters for the kernel's default and one-8-warp-block builds at λ = 0.8 / 0.5 (D = 128,
32 / 8 heads, pages) with clusters of 2, 4, 8 and 16 blocks (16: non-portable, allowed first on the function).
(b) Medians (three interleaved rounds, CUDA graphs, read flush) of the split kernel alone (partials written, no
merge), the split kernel + the Triton combine kernel (main's captured step) and the split kernel merging in its last
block per KV head, for the default launch and one 8-warp block a multiprocessor.
Command: PYTHONPATH=. python benchmarks/results/experiments/merge_prize_s23.py OUT.json
Result (H200, 2026-11-30 06:22 UTC, code of f0187e9): BENCHMARKS.md "Session 23" item 5."""
import ctypes
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


class LaunchAttr(ctypes.Structure):  # CUlaunchAttribute: id, pad to 8, 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_uint * 16)]


class LaunchConfig(ctypes.Structure):  # CUlaunchConfig
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(LaunchAttr)), ("numAttrs", ctypes.c_uint)]


def max_active_clusters(plan, size: int) -> int:
    from torch.cuda import _utils as cuda_utils

    lib = cuda_utils._get_gpu_runtime_library()
    func = plan.kernel.func
    if size > 8:
        st = lib.cuFuncSetAttribute(func, 14, 1)  # CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
        if st != 0:
            return -1000 - st
    attr = LaunchAttr()
    attr.id = 4  # CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
    attr.value[0], attr.value[1], attr.value[2] = size, 1, 1
    cfg = LaunchConfig(size * 16, 1, 1, 32 * plan.warps, 1, 1, plan.smem, None, ctypes.pointer(attr), 1)
    n = ctypes.c_int(-1)
    st = lib.cuOccupancyMaxActiveClusters(ctypes.byref(n), func, ctypes.byref(cfg))
    return n.value if st == 0 else -st


VARIANTS = {"default": {}, "w8x1": dict(warps=8, min_blocks=1)}
rows = []
for lam in (0.8, 0.5):
    q, k, v, stat, lens = make_shape(1, 32, 8, 8192, 128, torch.bfloat16, seed=3)
    pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens))
    for n, kw in VARIANTS.items():
        plan = cuda.SplitPlan(q, pages, 128 ** -0.5, **kw)
        clusters = {c: max_active_clusters(plan, c) for c in (2, 4, 8, 16)}
        rows.append(dict(kind="clusters", key_ratio=lam, variant=n, warps=plan.warps, smem=plan.smem,
                         max_active_clusters=clusters))
        print(f"λ{lam} {n}: {plan.warps} warps, {plan.smem} B smem, max active clusters {clusters}", flush=True)
for s, b in ((131072, 1), (32768, 1), (8192, 1), (32768, 8)):
    q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b)
    for lam in (0.8, 0.5):
        pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens))
        ref = decode_attn_ref(q.float(), pages, None, None, 128 ** -0.5, block_size=8192)
        fns = {}
        for n, kw in VARIANTS.items():
            plan = cuda.SplitPlan(q, pages, 128 ** -0.5, **kw)
            o, l = plan.partials()
            for comb in ("triton", "kernel"):
                out = cuda.decode_attn_cuda(q, pages, 128 ** -0.5, combine=comb, **kw)
                err = ((out.float() - ref).norm() / ref.norm()).item()
                assert err < 1e-2, (n, comb, s, b, lam, err)
            fns[f"{n}_split"] = lambda plan=plan, o=o, l=l: plan.launch(o, l)
            fns[f"{n}_combine"] = lambda kw=kw: cuda.decode_attn_cuda(q, pages, 128 ** -0.5, combine="triton", **kw)
            fns[f"{n}_own"] = lambda kw=kw: cuda.decode_attn_cuda(q, pages, 128 ** -0.5, combine="kernel", **kw)
        times = {n: [] for n in fns}
        for _ in range(3):
            for n, fn in fns.items():
                times[n].append(bench_us(fn, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(kind="times", context=s, batch=b, key_ratio=lam, times=times, **{f"{n}_us": m for n, m in med.items()}))
        print(f"{s:>6} b{b} λ{lam}  " + "  ".join(f"{n} {m:6.1f}" for n, m in med.items()), flush=True)
        del pages
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
