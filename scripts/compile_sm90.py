"""Compile the decode kernel for an H100/H200 (sm_90) on a machine without a GPU and report what the compiler made.

Triton's wheel bundles ptxas / cuobjdump, so layouts (TTGIR), PTX, SASS and the register count of a config can be
checked before spending GPU time. Writes ``k.ttgir``, ``k.ptx``, ``k.sass``... into ``--out`` and prints the
registers / spills, the blocked layouts and the shared-memory traffic instructions.

    python scripts/compile_sm90.py --bs 32 --warps 4 --stages 3                 # SparK tile, D = 128, λ = 0.5
    python scripts/compile_sm90.py --expand 3 --bs 64 --stages 2 --d 64 --dk 32 # session-1 layout at D = 64
    python scripts/compile_sm90.py --layout dense --bs 64 --stages 2            # dense control
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.pop("TRITON_INTERPRET", None)  # compile for real, whatever the caller's environment says

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparkv.kernels.decode_attn import fused  # noqa: E402

POINTERS = {"q": "*bf16", "kd": "*bf16", "kv": "*bf16", "kb": "*i32", "sb": "*i32", "r": "*bf16", "u": "*fp32",
            "v": "*bf16", "lens": "*i32", "tk": "*bf16", "tv": "*bf16", "o_part": "*fp32", "lse_part": "*fp32"}
FLOATS = ("scale", "const")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", choices=["spark", "dense"], default="spark")
    ap.add_argument("--expand", type=int, default=fused.EXPAND_PTX, help="EXPAND_* mode (2: PTX, 3: PTX tokens)")
    ap.add_argument("--d", type=int, default=128, help="head_dim")
    ap.add_argument("--dk", type=int, default=64, help="kept channels")
    ap.add_argument("--group", type=int, default=4, help="query heads per KV head")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--pf", type=int, default=1)
    ap.add_argument("--maxnreg", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/sm90"))
    args = ap.parse_args()

    fn = fused.decode_attn_fwd_kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # unwrap autotune / heuristics
        fn = fn.fn
    constexprs = dict(
        **fused.shape_constexprs(8, args.group, args.d, args.dk),
        LAYOUT=fused.LAYOUT_SPARK if args.layout == "spark" else fused.LAYOUT_DENSE, RECOVERY=fused.REC_MEAN,
        HAS_TAIL=True, EXPAND=args.expand, PF=args.pf, NLK=fused.prefetch_lanes(args.bs, args.dk), USE_POPC=True,
        F32=False, BS=args.bs)
    signature = {n: POINTERS.get(n) or ("constexpr" if n in constexprs else "fp32" if n in FLOATS else "i32")
                 for n in fn.arg_names}
    missing = [n for n in constexprs if n not in fn.arg_names]
    if missing:
        sys.exit(f"kernel has no parameters {missing}; update this script")
    src = ASTSource(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()})
    options = dict(num_warps=args.warps, num_stages=args.stages)
    if args.maxnreg:
        options["maxnreg"] = args.maxnreg
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)

    args.out.mkdir(parents=True, exist_ok=True)
    for ext, text in kernel.asm.items():
        (args.out / f"k.{ext}").write_bytes(text if isinstance(text, bytes) else text.encode())
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    cubin = str(args.out / "k.cubin")
    usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", cubin], capture_output=True,
                           text=True, check=True).stdout
    sass = subprocess.run([str(tools / "cuobjdump"), "--dump-sass", cubin], capture_output=True, text=True,
                          check=True).stdout
    (args.out / "k.sass").write_text(sass)
    ttgir = (args.out / "k.ttgir").read_text()

    print(usage.strip().splitlines()[-1].strip())
    for line in ttgir.splitlines():
        if re.match(r"#blocked\d* = ", line):
            print(line)
    print(f"cp.async copies: {ttgir.count('async_copy_global_to_local')}  SASS: LDG {sass.count('LDG')}, "
          f"LDS/STS/LDSM {len(re.findall(r'LDS|STS|LDSM', sass))}, SHFL {sass.count('SHFL')}, "
          f"{len(sass.splitlines())} lines  -> {args.out}/")


if __name__ == "__main__":
    main()
