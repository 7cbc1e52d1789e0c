"""Session 39: whether two kernel folders (cuda.py + spark_walk.cu) compile to the same SASS for the launcher's builds
of given cases (pages, bf16, the H200's shared-memory limits, sm_90, NVRTC from the test extras' wheel), and whether
the second folder's QROWS build (steps of several new tokens) compiles and spills.
Command: python benchmarks/results/experiments/sass_same_s39.py FOLDER_A FOLDER_B D,DK,G,WARPS,MIN_BLOCKS,REGISTERS ...
Run quoted in BENCHMARKS.md "Session 39" item 3 (2-core CPU machine, 2026-12-01, NVRTC 13.5.37): 4c55583's files
against e7b1312's, cases 128,64,4,4,2,200 (λ = 0.5 target cells) 128,26,4,8,1,0 (λ = 0.8) 64,32,3,4,2,200
64,13,3,8,1,0 128,64,8,4,2,200 256,128,4,4,2,200: identical SASS in all six; the QROWS builds (no register cap)
have no stack frame but at D = 256 (80 B; the one-token build there has 72 B)."""
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
from compile_sm90 import cuobjdump  # noqa: E402

LIMIT, SM_BYTES = 232448, 233472  # the H200's opt-in shared memory per block and per multiprocessor


def load(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def build(mod, d: dict) -> tuple[list[str], int | None]:
    cubin, log = mod.nvrtc_build(mod.kernel_source(d), mod.KERNEL_NAME, "sm_90", mod.pip_nvrtc())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        _, sass = cuobjdump(path)
    body = [re.sub(r"/\*[0-9a-f]{4,}\*/", "", line).strip() for line in sass.splitlines()
            if re.search(r"/\*[0-9a-f]{4,}\*/ ", line)]
    return body, mod.stack_frame_bytes(log)


mods = load(sys.argv[1], "folder_a"), load(sys.argv[2], "folder_b")
for case in sys.argv[3:]:
    head_dim, kept, group, warps, min_blocks, registers = (int(x) for x in case.split(","))
    builds = []
    for mod in mods:
        d = mod.defines_within(LIMIT, head_dim, kept, group, "mean", torch.bfloat16, warps, min_blocks, 2, 2,
                               records=True, registers=registers)
        builds.append(build(mod, mod.with_query_operand_shared(d, LIMIT, SM_BYTES)))
    same = builds[0][0] == builds[1][0]
    line = f"{case}: {len(builds[0][0])} / {len(builds[1][0])} instructions, " + (
        "identical SASS" if same else "DIFFERENT")
    if hasattr(mods[1], "with_query_rows"):
        qrows = mods[1].with_query_operand_shared({k: v for k, v in d.items() if k != "MAXNREG"} | {"QROWS": 1},
                                                  LIMIT, SM_BYTES)
        line += f"; QROWS build: stack frame {build(mods[1], qrows)[1]} B"
    print(line)
