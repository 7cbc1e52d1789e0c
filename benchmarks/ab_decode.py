"""A/B of decode-kernel variants on the same data: each variant is a copy of ``sparkv/kernels/decode_attn/fused.py``.

Every variant times all of its own SparK autotune candidates (``SPARK_CONFIGS``) at the default split size, after
checking each against the fp32 PyTorch reference (relative error < 1e-2; a larger error stops the run, a candidate
that fails to compile is reported and skipped), and the table gives each variant's best.
Typical use: compare the working tree with a revision before committing a kernel change.

    git show HEAD:sparkv/kernels/decode_attn/fused.py > /tmp/head_fused.py
    PYTHONPATH=. python benchmarks/ab_decode.py --variant head=/tmp/head_fused.py      # vs the working tree's
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEVICE, bench_us, environment, rel_err, write_json  # noqa: E402
from decode_attention import TOL, make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import fused as working_tree  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# (head_dim, query heads, KV heads, context, batch): the two target shapes at D = 128, one SmolLM2 shape.
SHAPES = [(128, 32, 8, 32768, 8), (128, 32, 8, 131072, 1), (64, 9, 3, 32768, 8)]


def load_variant(name: str, path: str):
    spec = importlib.util.spec_from_file_location(f"fused_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                   help="a fused.py copy to compare (repeatable); the working tree's is always included")
    p.add_argument("--ratios", type=lambda x: [float(t) for t in x.split(",")], default=[0.5, 0.8])
    p.add_argument("--out", type=Path, default=None, help="JSON file for every timed config")
    args = p.parse_args()
    if DEVICE != "cuda":
        sys.exit("ab_decode.py times GPU kernels; it needs CUDA")

    variants = {"tree": working_tree}
    for spec in args.variant:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"--variant must be NAME=PATH, got {spec!r}")
        variants[name] = load_variant(name, path)

    rows = []
    for d, hq, h, s, b in SHAPES:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=1)
        for lam in args.ratios:
            prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
            ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
            nbytes = prefix.nbytes() + q.nbytes
            for name, module in variants.items():
                for c in module.SPARK_CONFIGS:
                    cfg = dict(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, maxnreg=c.maxnreg)

                    def step(module=module, cfg=cfg, q=q, prefix=prefix, d=d):
                        return module.decode_attn_triton(q, prefix, None, None, d ** -0.5, config=cfg)

                    try:
                        err = rel_err(step(), ref)
                    except Exception as e:  # noqa: BLE001 - a variant's candidate may not compile; say so, go on
                        print(f"{name:>8} {cfg}: failed: {e!r}"[:300], flush=True)
                        rows.append(dict(variant=name, head_dim=d, context=s, batch=b, key_ratio=lam,
                                         failed=repr(e)[:300], **cfg))
                        continue
                    if not err < TOL:
                        raise SystemExit(f"{name} {cfg}: relative error {err:.2e} vs the fp32 reference")
                    us = bench_us(step)
                    rows.append(dict(variant=name, head_dim=d, context=s, batch=b, key_ratio=lam, us=us,
                                     tbps=nbytes / us / 1e6, rel_err=err, **cfg))
                    print(f"{name:>8} D{d} {s // 1024}K b{b} λ{lam}: {us:7.1f} µs  {cfg}", flush=True)
            del prefix
        del q, k, v
        torch.cuda.empty_cache()

    print("\n| D | context | batch | λ | " + " | ".join(f"{n} best µs" for n in variants) + " | tree vs others |")
    print("|---|---|---|---|" + "---|" * (len(variants) + 1))
    key = lambda r: (r["head_dim"], r["context"], r["batch"], r["key_ratio"])  # noqa: E731
    for (d, s, b, lam), group in itertools.groupby(sorted(rows, key=key), key=key):
        group = list(group)
        best = {n: min(r["us"] for r in group if r["variant"] == n and "us" in r) for n in variants}
        ratios = ", ".join(f"{best[n] / best['tree']:.3f}x vs {n}" for n in variants if n != "tree")
        print(f"| {d} | {s // 1024}K | {b} | {lam} | " + " | ".join(f"{best[n]:.1f}" for n in variants)
              + f" | {ratios} |")
    if args.out:
        write_json(args.out, dict(**environment(), command=" ".join(sys.argv), rows=rows))


if __name__ == "__main__":
    main()
