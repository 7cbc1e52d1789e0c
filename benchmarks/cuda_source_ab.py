"""Two versions of the CUDA SparK split kernel in one run: the working tree's against another tree's.

The other version is a folder holding that tree's ``cuda.py`` and ``spark_walk.cu`` (made where git is, e.g.
``mkdir -p /tmp/base && for f in cuda.py spark_walk.cu; do git show REV:sparkv/kernels/decode_attn/$f >
/tmp/base/$f; done``); its ``cuda.py`` is imported as a module of its own, so both builds, shared-memory layouts and
launch choices are each tree's own. Every case is first checked against the fp32 PyTorch reference (both versions,
through a full split + combine), then the split kernels alone are timed in interleaved rounds (CUDA-graph replays,
L2 flushed by a read, ``common.bench_us``), default launch, Llama heads (32 query, 8 KV, D = 128) and SmolLM2's
(9 / 3, D = 64).

    PYTHONPATH=. python benchmarks/cuda_source_ab.py --base-dir /tmp/base
    # -> benchmarks/results/experiments/cuda_source_ab_h200.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, parse_gpu_args, rel_err, script_parser, write_json  # noqa: E402
from decode_attention import make_shape  # noqa: E402
from folder_ab import load_module  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# (q heads, KV heads, D, context, batch, λ)
SHAPES = [
    (32, 8, 128, 131072, 1, 0.5), (32, 8, 128, 131072, 1, 0.8), (32, 8, 128, 32768, 8, 0.5),
    (32, 8, 128, 32768, 8, 0.8), (32, 8, 128, 131072, 8, 0.8), (32, 8, 128, 8192, 1, 0.8),
    (32, 8, 128, 32768, 1, 0.8), (9, 3, 64, 32768, 8, 0.8), (9, 3, 64, 131072, 8, 0.5),
]


def launch_overrides(text: str) -> dict[str, int]:
    """``--tree-launch``: :func:`cuda.parse_launch` over the working tree's ``cuda.DEFAULTS`` keys."""
    try:
        return cuda.parse_launch(text, cuda.DEFAULTS)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main() -> None:
    p = script_parser(__doc__, RESULTS / "experiments" / "cuda_source_ab_h200.json")
    p.add_argument("--base-dir", type=Path, required=True, help="folder with the other tree's cuda.py and "
                   "spark_walk.cu")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default 3)")
    p.add_argument("--tree-launch", type=launch_overrides, default={}, metavar="K=V,...",
                   help="launch parameters of the working tree's kernel (its cuda.DEFAULTS keys), e.g. dynamic=0")
    p.add_argument("--key-ratio", type=float, default=None, choices=sorted({c[-1] for c in SHAPES}),
                   help="only the shapes of this λ (default: all)")
    args = parse_gpu_args(p, "cuda_source_ab.py")
    versions = {"base": load_module(args.base_dir, "sparkv_cuda_base"), "tree": cuda}
    launch = {"base": {}, "tree": args.tree_launch}
    rows = []
    shapes = [c for c in SHAPES if args.key_ratio is None or c[-1] == args.key_ratio]
    for hq, h, d, s, b, lam in tqdm(shapes, desc="shapes"):
        torch.cuda.empty_cache()
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
        row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam,
                   bytes=prefix.nbytes() + q.nbytes)
        plans = {}
        for name, mod in versions.items():
            plan = mod.SplitPlan(q, prefix, d ** -0.5, **launch[name])
            o_part, lse_part = plan.partials()
            plan.launch(o_part, lse_part)
            out = combine_partials(o_part, lse_part, q)
            err = rel_err(out, ref)
            if not err < 1e-2:
                raise SystemExit(f"{name} at {row}: rel err {err:.2e} against the fp32 reference")
            row[f"{name}_rel_err"] = err
            row[f"{name}_smem"] = plan.smem
            plans[name] = (plan, o_part, lse_part)
        times = {name: [] for name in versions}
        for _ in range(args.rounds):
            for name, (plan, o_part, lse_part) in plans.items():
                times[name].append(bench_us(lambda plan=plan, o=o_part, lse=lse_part: plan.launch(o, lse),
                                            flush="read"))
        for name, t in times.items():
            row[f"{name}_us_runs"] = t
            row[f"{name}_us"] = statistics.median(t)
        row["tree_vs_base"] = row["base_us"] / row["tree_us"]
        rows.append(row)
        tqdm.write(f"{s // 1024}K b{b} D={d} λ={lam}: base {row['base_us']:7.1f} µs, tree {row['tree_us']:7.1f} µs "
                   f"({row['tree_vs_base']:.3f}x), rel err {row['base_rel_err']:.1e} / {row['tree_rel_err']:.1e}")
    command = f"PYTHONPATH=. python benchmarks/cuda_source_ab.py --base-dir {args.base_dir}"
    if args.key_ratio is not None:
        command += f" --key-ratio {args.key_ratio}"
    if args.tree_launch:
        command += " --tree-launch " + ",".join(f"{k}={v}" for k, v in args.tree_launch.items())
    write_json(args.out, {**environment(), "command": command, "tree_launch": args.tree_launch, "rows": rows})
    print("\n| shape | λ | base µs | tree µs | tree vs base |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['context'] // 1024}K·b{r['batch']} D={r['head_dim']} | {r['key_ratio']} | {r['base_us']:.1f} | "
              f"{r['tree_us']:.1f} | {r['tree_vs_base']:.3f}x |")


if __name__ == "__main__":
    main()
