"""Session 27: whether two kernel folders (cuda.py + spark_walk.cu) compile to the same SASS for given cases, with
KEPT_MMA set per folder (0: the walk, its list as the folder's rule has it; 1 / 2: that mode, no list). Pages, bf16,
4-warp blocks x 2, two stages, cap 200, sm_90; compares the whole kernel's instructions without their addresses.
Command: python benchmarks/results/experiments/sass_same_s27.py FOLDER_A FOLDER_B D,DK,G,KEPT_MMA_A,KEPT_MMA_B ...
Runs quoted in BENCHMARKS.md "Session 27" item 3 (2-core CPU machine, 2026-11-30, NVRTC 13.5.37):
  86e1e31's files against the landed tree: 128,64,8,1,1 128,32,6,1,1 128,64,4,0,0 128,26,4,0,0 256,128,4,0,0: identical;
  the landed tree (b8c8697) against the reviewed one (defines_within, one A-operand loop for both modes):
  128,64,8,1,1 128,32,6,1,1 128,96,4,2,2 128,77,4,2,2 256,192,2,2,2 128,52,8,2,2 128,64,4,0,0: identical."""
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, "scripts")
from compile_sm90 import cuobjdump  # noqa: E402


def load(folder: str, name: str):
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def instructions(mod, defines: dict) -> tuple[str, int | None, list[str]]:
    cubin, log = mod.nvrtc_build(mod.kernel_source(defines), mod.KERNEL_NAME, "sm_90", mod.pip_nvrtc())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage, sass = cuobjdump(path)
    body = [re.sub(r"/\*[0-9a-f]{4,}\*/", "", line).strip() for line in sass.splitlines()
            if re.search(r"/\*[0-9a-f]{4,}\*/ ", line)]
    return usage.split()[0], mod.stack_frame_bytes(log), body


mods = load(sys.argv[1], "folder_a"), load(sys.argv[2], "folder_b")
for case in sys.argv[3:]:
    head_dim, kept, group, *modes = (int(x) for x in case.split(","))
    builds = []
    for mod, mode in zip(mods, modes):
        d = mod.defines(head_dim, kept, group, "mean", torch.bfloat16, 4, 2, 2, 2, records=True, registers=200)
        d.pop("KEPT_MMA", None)
        if mode:
            d.pop("WALK_LIST", None)
            d["KEPT_MMA"] = mode
        builds.append(instructions(mod, d))
    same = builds[0][2] == builds[1][2]
    print(case, builds[0][:2], builds[1][:2], "identical SASS" if same else
          f"DIFFERENT ({len(builds[0][2])} vs {len(builds[1][2])} instructions)")
