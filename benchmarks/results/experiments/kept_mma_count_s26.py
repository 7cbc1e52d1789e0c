"""Session 26: static SASS count of the CUDA kernel's tile loop for a folder's cuda.py + spark_walk.cu (a variant, e.g.
one built by `SETUP_ONLY=1 bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh`): D = 128, pages, bf16, 4-warp
blocks, two walks, two stages, at the register caps given (0: __launch_bounds__'s). Prints registers, stack frame,
shared memory and the loop's count. Needs the test extras (the NVRTC wheel) and triton's cuobjdump, as
`scripts/compile_sm90.py --cuda` does.
Command: python benchmarks/results/experiments/kept_mma_count_s26.py FOLDER DK GROUP [CAPS, default 200,0]
The counts quoted in prepared_kmma_g4_s26.sh: 2-core CPU machine, 2026-11-30, NVRTC 13.5.37, sm_90."""
import importlib.util
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
from compile_sm90 import cuobjdump, loop_summary  # noqa: E402

folder, kept, group = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
caps = [int(x) for x in sys.argv[4].split(",")] if len(sys.argv) > 4 else [200, 0]
spec = importlib.util.spec_from_file_location("variant", Path(folder) / "cuda.py")
cuda = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda)
lib = cuda.pip_nvrtc()
if lib is None:
    sys.exit("needs NVRTC: pip install -e '.[test]' (the nvidia-cuda-nvrtc wheel)")
for cap in caps:
    d = cuda.defines(128, kept, group, "mean", torch.bfloat16, 4, 2, 2, 2, records=True, registers=cap)
    cubin, log = cuda.nvrtc_build(cuda.kernel_source(d), cuda.KERNEL_NAME, "sm_90", lib)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage, sass = cuobjdump(path)
    print(f"{Path(folder).name}: DK {kept}, {group} query heads a KV head, cap {cap}, KEPT_MMA {d.get('KEPT_MMA', 0)}:",
          usage.split()[0], f"stack {cuda.stack_frame_bytes(log)} B, shared {cuda.shared_bytes(d)} B;",
          loop_summary(sass, 1, 32).split(" = ")[0])
