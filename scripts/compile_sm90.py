"""Compile the decode kernel for an H100/H200 (sm_90) on a machine without a GPU and report what the compiler made.

Triton's wheel bundles ptxas / cuobjdump, so layouts (TTGIR), PTX, SASS and the register count of a config can be
checked before spending GPU time. Writes ``k.ttgir``, ``k.ptx``, ``k.sass``... into ``--out`` and prints the
registers / spills, shared memory, the blocked layouts, and the tile loop's SASS instruction count and mix. Pointers
and strides get the JIT's 16-divisibility hints, so the SASS is the one that runs: the loop count matched Nsight
Compute's instructions per tile on the H200 (784 for the default SparK config, 376 for the dense one).

    python scripts/compile_sm90.py --bs 32 --warps 4 --stages 3 --maxnreg 128   # default SparK tile, D = 128, λ = 0.5
    python scripts/compile_sm90.py --expand 3 --bs 64 --stages 2 --d 64 --dk 32 # session-1 layout at D = 64
    python scripts/compile_sm90.py --layout dense --bs 64 --stages 2            # dense control
    python scripts/compile_sm90.py --cuda --dk 64                               # the CUDA C++ kernel, λ = 0.5
    python scripts/compile_sm90.py --cuda --dk 26 --cuda-launch warps=8,stages=1  # λ = 0.8, 8-warp blocks

``--cuda`` compiles the CUDA C++ SparK kernel (``spark_walk.cu``, NVRTC from the test extras' wheel) with its default
launch parameters instead, and prints the same lines for its 32-token tile loop.
"""

from __future__ import annotations

import argparse
import collections
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
            "v": "*bf16", "lens": "*i32", "tk": "*bf16", "tv": "*bf16", "tail_len": "*i32", "o_part": "*fp32",
            "lse_part": "*fp32"}
FLOATS = ("scale", "const")


def largest_loop(sass: str) -> list[str]:
    """SASS instructions (text) of the largest loop body: from a backward branch's target to the branch."""
    ins = [(int(m.group(1), 16), m.group(2)) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", sass)]
    index = {addr: i for i, (addr, _) in enumerate(ins)}
    best: tuple[int, int] = (0, -1)
    for i, (addr, text) in enumerate(ins):
        target = re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < addr and int(target.group(1), 16) in index:
            start = index[int(target.group(1), 16)]
            if i - start > best[1] - best[0]:
                best = (start, i)
    return [text for _, text in ins[best[0]:best[1] + 1]]


def opcode(text: str) -> str:
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0].split(".")[0]


def sm90_source(fn, pointers: dict[str, str], constexprs: dict, floats=(), aligned=(), source_cls=ASTSource):
    """A compile source for ``fn`` with the JIT's specialisations: ``pointers`` (name -> type) and the ``aligned``
    integer arguments carry the 16-divisibility hint the JIT gives them at run time (16-byte-aligned tensors,
    strides that are multiples of 16); without it tile loads scalarise and the SASS is not the one that runs."""
    missing = [n for n in constexprs if n not in fn.arg_names]
    if missing:
        sys.exit(f"kernel has no parameters {missing}; update this script")
    signature = {n: pointers.get(n) or ("constexpr" if n in constexprs else "fp32" if n in floats else "i32")
                 for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in fn.arg_names
             if n in pointers or n in aligned}
    return source_cls(fn, signature, constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()},
                      attrs=attrs)


def dump(kernel, out: Path) -> tuple[str, str]:
    """Write every stage of a compiled kernel plus its SASS into ``out``; return (resource-usage line, SASS)."""
    out.mkdir(parents=True, exist_ok=True)
    for ext, text in kernel.asm.items():
        (out / f"k.{ext}").write_bytes(text if isinstance(text, bytes) else text.encode())
    return cuobjdump(out / "k.cubin")


def cuobjdump(cubin_path: Path) -> tuple[str, str]:
    """(resource-usage line, SASS) of a CUBIN, with the cuobjdump bundled in Triton's wheel; the SASS is also
    written next to it."""
    tools = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    cubin = str(cubin_path)
    usage = subprocess.run([str(tools / "cuobjdump"), "--dump-resource-usage", cubin], capture_output=True,
                           text=True, check=True).stdout
    sass = subprocess.run([str(tools / "cuobjdump"), "--dump-sass", cubin], capture_output=True, text=True,
                          check=True).stdout
    cubin_path.with_suffix(".sass").write_text(sass)
    return usage.strip().splitlines()[-1].strip(), sass


CUDA_LAUNCH_KEYS = ("warps", "min_blocks", "chains", "stages", "registers")  # the compile-time ones of cuda.DEFAULTS


def launch_overrides(text: str) -> dict[str, int]:
    """``--cuda-launch``: :func:`cuda.parse_launch` over :data:`CUDA_LAUNCH_KEYS`."""
    from sparkv.kernels.decode_attn import cuda

    try:
        return cuda.parse_launch(text, CUDA_LAUNCH_KEYS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def compile_cuda_kernel(args) -> None:
    """``--cuda``: the CUDA C++ SparK kernel with its default launch parameters (``--cuda-launch`` overrides), bf16,
    reading arrays or (``--pages``) tile records."""
    import torch

    from sparkv.kernels.decode_attn import cuda

    lib = cuda.pip_nvrtc()
    if lib is None:
        sys.exit("--cuda needs NVRTC: pip install -e '.[test]' (the nvidia-cuda-nvrtc wheel)")
    p = {**cuda.DEFAULTS, **args.cuda_launch}
    d = cuda.defines(args.d, args.dk, args.group, args.recovery, torch.bfloat16, p["warps"], p["min_blocks"],
                     p["chains"], p["stages"], records=args.pages, registers=p["registers"])
    args.out.mkdir(parents=True, exist_ok=True)
    cubin = args.out / "k.cubin"
    cubin.write_bytes(cuda.nvrtc_compile(cuda.kernel_source(d), cuda.KERNEL_NAME, "sm_90", lib))
    usage, sass = cuobjdump(cubin)
    print(usage, f"| shared memory per block: {cuda.shared_bytes(d)} B")
    print(loop_summary(sass, 1, 32))  # every warp walks its own 32-token tiles


def loop_summary(sass: str, warps: int, tokens: int) -> str:
    """The "tile loop:" line: the largest loop's SASS count, per (token, KV head) for ``tokens`` per iteration."""
    loop = largest_loop(sass)
    mix = collections.Counter(opcode(t) for t in loop).most_common(12)
    return (f"tile loop: {len(loop)} SASS instructions per warp per {tokens}-token tile = "
            f"{len(loop) * warps / tokens:.1f} warp instructions per (token, KV head); "
            + ", ".join(f"{k} {v}" for k, v in mix))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", choices=["spark", "dense"], default="spark")
    ap.add_argument("--expand", type=int, choices=[fused.EXPAND_GLOBAL, fused.EXPAND_PTX, fused.EXPAND_PTX_TOKENS],
                    default=fused.EXPAND_PTX, help="EXPAND_* mode (1: global gather, 2: PTX, 3: PTX tokens)")
    ap.add_argument("--d", type=int, default=128, help="head_dim")
    ap.add_argument("--dk", type=int, default=64, help="kept channels")
    ap.add_argument("--group", type=int, default=4, help="query heads per KV head")
    ap.add_argument("--recovery", choices=["mean", "zero", "constant"], default="mean")
    ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--pf", type=int, default=1)
    ap.add_argument("--maxnreg", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/sm90"))
    ap.add_argument("--pages", action="store_true", help="with --cuda: the kernel reading SparKPages (tile records)")
    ap.add_argument("--cuda", action="store_true", help="the CUDA C++ SparK kernel instead (uses --d --dk --group "
                    "--recovery; its own launch defaults)")
    ap.add_argument("--cuda-launch", type=launch_overrides, default={}, metavar="K=V,...",
                    help=f"with --cuda: overrides of its launch defaults, of {', '.join(CUDA_LAUNCH_KEYS)} "
                    "(e.g. warps=8,stages=1)")
    args = ap.parse_args()
    if not 1 <= args.dk <= args.d:
        ap.error(f"--dk must be in [1, --d = {args.d}], got {args.dk}")
    if args.cuda:
        compile_cuda_kernel(args)
        return

    fn = fused.decode_attn_fwd_kernel
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # unwrap heuristics
        fn = fn.fn
    constexprs = dict(
        **fused.shape_constexprs(8, args.group, args.d, args.dk),
        LAYOUT=fused.LAYOUT_SPARK if args.layout == "spark" else fused.LAYOUT_DENSE,
        RECOVERY=fused._RECOVERY_IDS[args.recovery],
        HAS_TAIL=True, TAIL_ON_DEVICE=False, EXPAND=args.expand, PF=args.pf,
        NLK=fused.prefetch_lanes(args.bs, args.dk), USE_POPC=True,
        F32=False, BS=args.bs, FOLD=1,
        R=1)  # R: one query row per key row, which the JIT specialises as the constant 1
    src = sm90_source(fn, POINTERS, constexprs, FLOATS, aligned=[n for n in fn.arg_names if n.startswith("s_")])
    options = dict(num_warps=args.warps, num_stages=args.stages)
    if args.maxnreg:
        options["maxnreg"] = args.maxnreg
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    usage, sass = dump(kernel, args.out)
    ttgir = (args.out / "k.ttgir").read_text()

    print(usage, f"| shared memory per program: {kernel.metadata.shared} B")
    for line in ttgir.splitlines():
        if re.match(r"#blocked\d* = ", line):
            print(line)
    # The tile loop's instruction count is what limits the SparK tile (BENCHMARKS.md: it matched Nsight Compute's
    # 784 instructions per tile for the profiled config); per (token, KV head) it compares layouts and configs.
    print(loop_summary(sass, args.warps, args.bs))
    print(f"cp.async copies: {ttgir.count('async_copy_global_to_local')}  SASS: LDG {sass.count('LDG')}, "
          f"LDS/STS/LDSM {len(re.findall(r'LDS|STS|LDSM', sass))}, SHFL {sass.count('SHFL')}, "
          f"{len(sass.splitlines())} lines  -> {args.out}/")


if __name__ == "__main__":
    main()
