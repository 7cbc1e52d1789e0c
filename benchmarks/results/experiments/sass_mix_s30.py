"""Session 30: the static SASS of the CUDA kernel's tile loop for a folder's cuda.py + spark_walk.cu (pages, bf16,
two walks, `mean` recovery): registers, stack frame, the loop's length and opcode counts, and where the loop's MMAs
sit relative to the kept walk (the span from its first FLO to its last). Needs the test extras (the NVRTC wheel) and
triton's cuobjdump; no GPU.
Command: python benchmarks/results/experiments/sass_mix_s30.py FOLDER D DK G WARPS MIN_BLOCKS STAGES CAP [K=V,...]
[arrays] (count_tile_loop_s27.py's arguments and build)
e.g. `... sparkv/kernels/decode_attn 128 64 4 4 2 2 200 QA_SMEM=1` (the default launch at λ = 0.5: REC_SPREAD is
set by cuda.defines) gave, on the 2-core CPU machine with NVRTC 13.5.37 on 2026-11-30, 200 registers, no stack frame,
1867 instructions, 26 of the loop's 48 HMMAs inside the walk at 64-91 % of it (BENCHMARKS.md "Session 30")."""
import collections
import re
import sys

sys.path.insert(0, "scripts")
sys.path.insert(0, "benchmarks/results/experiments")
from compile_sm90 import largest_loop, opcode  # noqa: E402
from count_tile_loop_s27 import build  # noqa: E402

folder = sys.argv[1]
cuda, d, log, usage, sass = build(folder, sys.argv[2:])
loop = largest_loop(sass)
counts = collections.Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0] for t in loop)
mma = [i for i, t in enumerate(loop) if opcode(t) == "HMMA"]
flo = [i for i, t in enumerate(loop) if opcode(t) == "FLO"]
print(f"{folder}: {usage.split()[0]}, stack {cuda.stack_frame_bytes(log)} B, tile loop {len(loop)} instructions")
print("opcodes:", ", ".join(f"{k} {v}" for k, v in counts.most_common(24)))
if flo:
    lo, hi = flo[0], flo[-1]
    inside = [(i - lo) / (hi - lo) for i in mma if lo <= i <= hi]
    where = f", at {100 * min(inside):.0f}-{100 * max(inside):.0f} % of it" if inside else ""
    print(f"walk: SASS {lo}-{hi}; HMMAs {len(mma)}, inside the walk {len(inside)}{where}")
