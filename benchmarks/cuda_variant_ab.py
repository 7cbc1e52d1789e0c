"""A/B of compile-time variants of the CUDA SparK split kernel (extra ``#define``s prepended to ``spark_walk.cu``)
and of launching the combine kernel as a programmatic dependent (``pdl``), on the H200, interleaved in one run.

Every variant is first checked against the fp32 PyTorch reference (short rows, odd kept counts, zero recovery, D = 64
and 128) and for repeatable eager outputs; then each shape is timed ``--reps`` times per variant, round-robin (CUDA
graph replays with the read flush, as the decode table), and the median is reported with the best SDPA backend's time.

    PYTHONPATH=. python benchmarks/cuda_variant_ab.py    # -> benchmarks/results/experiments/decode_cuda_ab_h200.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, rel_err, write_json  # noqa: E402
from cuda_decode_sweep import build  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda, fused  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# name -> (defines, combine kernel launched with PDL)
VARIANTS = {
    "base": ({}, False),
    "pin_scale": ({"PIN_SCALE": 1}, False),
    "pdl": ({}, True),
    "pin_scale+pdl": ({"PIN_SCALE": 1}, True),
    "l2pf1": ({"L2PF": 1}, False),
    "l2pf2": ({"L2PF": 2}, False),
    "l2pf3": ({"L2PF": 3}, False),
}
CHECKS = [(2, 8, 2, 1000, 128, 26, torch.bfloat16, "mean", [1000, 777]),
          (2, 8, 2, 1000, 128, 64, torch.bfloat16, "mean", [999, 33]),
          (2, 9, 3, 1501, 64, 13, torch.bfloat16, "mean", [1501, 45]),
          (2, 16, 2, 700, 128, 40, torch.bfloat16, "zero", None)]
SHAPES = [(128, 32, 8, 131072, 1), (128, 32, 8, 32768, 8), (128, 32, 8, 8192, 1), (128, 32, 8, 131072, 8),
          (64, 9, 3, 32768, 8)]
_SOURCE = cuda.kernel_source
_CACHES: dict[str, dict] = {}


def use(name: str) -> None:
    """Make ``cuda`` build and launch variant ``name`` (each variant keeps its own compiled kernels)."""
    defs, pdl = VARIANTS[name]
    head = "".join(f"#define {k} {v}\n" for k, v in defs.items())
    cuda.kernel_source = lambda d: head + _SOURCE(d)
    cuda._COMPILED = _CACHES.setdefault(name, {})
    cuda._PLANS.clear()
    fused.COMBINE_PDL = pdl


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=RESULTS / "experiments" / "decode_cuda_ab_h200.json")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda_variant_ab.py needs a CUDA device")
    checks = []
    for case in CHECKS:
        q, prefix = build(*case, seed=7)
        scale = case[4] ** -0.5
        ref = decode_attn_ref(q.float(), prefix, None, None, scale)
        for name in VARIANTS:
            use(name)
            out = cuda.decode_attn_cuda(q, prefix, scale, combine="triton")
            again = cuda.decode_attn_cuda(q, prefix, scale, combine="triton")
            checks.append(dict(case=str(case[:7]), variant=name, err=rel_err(out, ref),
                               repeatable=bool(torch.equal(out, again))))
    bad = [c for c in checks if c["err"] > 1e-2 or not c["repeatable"]]
    if bad:
        sys.exit(f"a correctness check failed, nothing is timed: {bad}")
    rows = []
    for d, hq, h, s, b in SHAPES:
        torch.cuda.empty_cache()
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        scale = d ** -0.5
        sdpa = min(t for t in (sdpa_us(q, k, v, scale, be, "read")[0] for be in
                               (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                torch.nn.attention.SDPBackend.CUDNN_ATTENTION)) if t)
        for lam in (0.5, 0.8):
            prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
            ref = decode_attn_ref(q.float(), prefix, None, None, scale, block_size=8192)
            times: dict[str, list[float]] = {}
            for rep in range(args.reps):
                for name in VARIANTS:
                    use(name)

                    def fn(q=q, prefix=prefix, scale=scale):
                        return cuda.decode_attn_cuda(q, prefix, scale, combine="triton")

                    if rep == 0 and rel_err(fn(), ref) > 1e-2:
                        sys.exit(f"{name} is wrong at {d, s, b, lam}")
                    times.setdefault(name, []).append(bench_us(fn, flush="read"))
            us = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(head_dim=d, context=s, batch=b, key_ratio=lam, bytes=prefix.nbytes() + q.nbytes,
                             sdpa_us=sdpa, us=us, runs=times))
            print(f"D{d} {s // 1024}K b{b} λ={lam} SDPA {sdpa:.1f} µs | "
                  + " | ".join(f"{n} {u:.1f} ({sdpa / u:.3f}x)" for n, u in us.items()), flush=True)
    write_json(args.out, {**environment(), "command": "PYTHONPATH=. python benchmarks/cuda_variant_ab.py",
                          "flush": "read", "variants": {n: dict(defines=d, pdl=p) for n, (d, p) in VARIANTS.items()},
                          "checks": checks, "rows": rows})


if __name__ == "__main__":
    main()
