"""Session 27: static SASS count of the CUDA kernel's tile loop for a folder's cuda.py + spark_walk.cu, at any launch
and with extra compile-time defines (e.g. QA_SMEM=1, which only the launcher sets). Pages unless the last argument
is `arrays`; bf16, two walks, `mean` recovery. Needs the test extras (the NVRTC wheel) and triton's cuobjdump.
Command: python benchmarks/results/experiments/count_tile_loop_s27.py FOLDER D DK G WARPS MIN_BLOCKS STAGES CAP
[K=V,...] [arrays]
e.g. the counts in qa_smem_ab_s27.py: ... /tmp/s27q/qa 128 26 4 8 1 2 0 QA_SMEM=1 (2-core CPU machine, 2026-11-30,
NVRTC 13.5.37, sm_90)."""
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
from compile_sm90 import cuobjdump, loop_summary  # noqa: E402


def build(folder: str, argv: list[str]):
    """``(cuda module, defines, ptxas log, usage line, SASS)`` of FOLDER's kernel for the command line's
    ``D DK G WARPS MIN_BLOCKS STAGES CAP [K=V,...] [arrays]`` (``argv``); also used by sass_mix_s30.py."""
    head_dim, kept, group, warps, min_blocks, stages, cap = (int(x) for x in argv[:7])
    rest = argv[7:]
    extra = dict(kv.split("=") for arg in rest if arg != "arrays" for kv in arg.split(","))
    spec = importlib.util.spec_from_file_location("variant", Path(folder) / "cuda.py")
    cuda = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cuda)
    d = cuda.defines(head_dim, kept, group, "mean", torch.bfloat16, warps, min_blocks, 2, stages,
                     records="arrays" not in rest, registers=cap)
    d.update({k: int(v) for k, v in extra.items()})
    cubin, log = cuda.nvrtc_build(cuda.kernel_source(d), cuda.KERNEL_NAME, "sm_90", cuda.pip_nvrtc())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage, sass = cuobjdump(path)
    return cuda, d, log, usage, sass


if __name__ == "__main__":
    folder = sys.argv[1]
    head_dim, kept, group, warps, min_blocks, stages, cap = (int(x) for x in sys.argv[2:9])
    extra = dict(kv.split("=") for arg in sys.argv[9:] if arg != "arrays" for kv in arg.split(","))
    cuda, d, log, usage, sass = build(folder, sys.argv[2:])
    print(f"{Path(folder).name}: D {head_dim}, DK {kept}, {group} query heads a KV head, {warps} warps x {min_blocks}, "
          f"{stages} stages, cap {cap}, {extra or 'no extra defines'}:", usage.split()[0],
          f"stack {cuda.stack_frame_bytes(log)} B, shared {cuda.shared_bytes(d)} B;",
          loop_summary(sass, 1, 32).split(" = ")[0])
