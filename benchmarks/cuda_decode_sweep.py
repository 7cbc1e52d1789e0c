"""Launch parameters of the CUDA SparK split kernel (``sparkv/kernels/decode_attn/spark_walk.cu``) on the H200.

First a correctness pass (the kernel, with its defaults and with every compile-time variant of
``CHECK_VARIANTS``, against the fp32 PyTorch reference on small random cases: head dims 64 / 128 / 256, odd and
even kept counts, GQA groups 1-8, every supported recovery, bf16 / fp16, short rows), then, at the issue's target
shapes plus one SmolLM2 shape, every launch candidate (overrides of ``cuda.DEFAULTS``) timed against the best SDPA
backend (same data, same run).

    PYTHONPATH=. python benchmarks/cuda_decode_sweep.py
    # -> benchmarks/results/experiments/decode_cuda_sweep_h200.json
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, parse_gpu_args, rel_err, script_parser, write_json  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import decode_attn_triton  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

CHECKS = [
    # (B, HQ, H, S, D, DK, dtype, recovery, lengths)
    (2, 8, 2, 1000, 128, 64, torch.bfloat16, "mean", [1000, 777]),
    (2, 8, 2, 1000, 128, 26, torch.bfloat16, "mean", [999, 33]),
    (1, 32, 8, 4096, 128, 26, torch.bfloat16, "mean", None),
    (3, 9, 3, 1500, 64, 32, torch.bfloat16, "mean", [1500, 1, 700]),
    (2, 9, 3, 1501, 64, 13, torch.bfloat16, "mean", [1501, 45]),
    (2, 9, 3, 999, 64, 13, torch.float16, "constant", [999, 998]),
    (2, 16, 2, 700, 128, 40, torch.bfloat16, "zero", None),
    (2, 2, 2, 700, 128, 100, torch.bfloat16, "mean", None),
    (1, 8, 2, 2000, 256, 52, torch.bfloat16, "mean", None),
]
# (D, HQ, H, context, batch): the issue's two target shapes, small and large caches, and SmolLM2's heads.
SHAPES = [(128, 32, 8, 32768, 8), (128, 32, 8, 131072, 1), (128, 32, 8, 8192, 1), (128, 32, 8, 32768, 1),
          (128, 32, 8, 131072, 8), (64, 9, 3, 32768, 8)]
# Launch candidates: overrides of cuda.DEFAULTS (the first is the defaults themselves), and the split kernel's own
# merge of the splits instead of the combine kernel (what eager steps use; a captured step takes the combine kernel).
CANDIDATES = [
    {},
    dict(stages=1),
    dict(min_blocks=3),
    dict(stages=1, min_blocks=3),
    dict(combine="kernel"),
]
# L2 flushed by reading a buffer before every timed call, as for the decode table's main columns (common.bench_us).
FLUSH = "read"
# Compile-time variants every correctness check also runs with.
CHECK_VARIANTS = [dict(stages=1), dict(stages=2), dict(stages=1, min_blocks=3), dict(chains=1), dict(combine="kernel"),
                  dict(combine="triton")]


def name(kw: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults"


def build(b, hq, h, s, d, dk, dtype, recovery, lengths, seed):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, dtype, seed)
    keys = select_pack_triton(k, stat, dk)
    if recovery != "mean":
        keys = replace(keys, recovery=recovery, scale=None, u=None,
                       sign_bits=None if recovery == "zero" else keys.sign_bits,
                       constant=0.01 if recovery == "constant" else 0.0)
    if lengths is not None:
        lens = torch.tensor(lengths, dtype=torch.int32, device="cuda")
    return q, CompressedKV(keys, v, lens)


def main() -> None:
    args = parse_gpu_args(script_parser(__doc__, RESULTS / "experiments" / "decode_cuda_sweep_h200.json"),
                          "cuda_decode_sweep.py")
    checks, rows = [], []
    for b, hq, h, s, d, dk, dtype, rec, lengths in CHECKS:
        q, prefix = build(b, hq, h, s, d, dk, dtype, rec, lengths, seed=s + dk)
        ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5)
        out = decode_attn_triton(q, prefix, None, None, d ** -0.5, spark_kernel="cuda")
        case = dict(b=b, hq=hq, h=h, s=s, d=d, dk=dk, dtype=str(dtype), recovery=rec)
        checks.append(dict(case, variant="defaults", err=rel_err(out, ref)))
        for kw in CHECK_VARIANTS:
            out = cuda.decode_attn_cuda(q, prefix, d ** -0.5, **kw)
            checks.append(dict(case, variant=name(kw), err=rel_err(out, ref)))
        print("check", case, "max err", max(c["err"] for c in checks[-1 - len(CHECK_VARIANTS):]), flush=True)
    if any(c["err"] > 1e-2 for c in checks):
        sys.exit("a correctness check failed: nothing is timed")
    for d, hq, h, s, b in SHAPES:
        torch.cuda.empty_cache()
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        scale = d ** -0.5
        sdpa = min(t for t in (sdpa_us(q, k, v, scale, torch.nn.attention.SDPBackend.FLASH_ATTENTION, FLUSH)[0],
                               sdpa_us(q, k, v, scale, torch.nn.attention.SDPBackend.CUDNN_ATTENTION, FLUSH)[0]) if t)
        for lam in (0.5, 0.8):
            dk = kept_channels(d, lam)
            prefix = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
            ref = decode_attn_ref(q.float(), prefix, None, None, scale, block_size=8192)
            row = dict(head_dim=d, context=s, batch=b, key_ratio=lam, kept=dk, bytes=prefix.nbytes() + q.nbytes,
                       sdpa_us=sdpa, candidates={})
            for kw in CANDIDATES:
                err = rel_err(cuda.decode_attn_cuda(q, prefix, scale, **kw), ref)
                us = bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, prefix, scale, **kw), flush=FLUSH) \
                    if err < 1e-2 else None
                row["candidates"][name(kw)] = dict(us=us, rel_err=err, launch=dict(cuda.LAST_LAUNCH))
                print(f"  {name(kw):<70} {us or float('nan'):8.1f} µs  {sdpa / us if us else 0:.2f}x  err {err:.1e}",
                      flush=True)
            # The split kernel alone (no combine): what the combine kernel adds to the step.
            row["split_only_us"] = bench_us(lambda: cuda.spark_split_partials(q, prefix, scale), flush=FLUSH)
            rows.append(row)
            best = min((c["us"], name) for name, c in row["candidates"].items() if c["us"])
            print(f"D{d} {s // 1024}K b{b} λ={lam}: SDPA {sdpa:.1f} µs, best {best[1]} {best[0]:.1f} µs "
                  f"({sdpa / best[0]:.2f}x)", flush=True)
    write_json(args.out, {**environment(), "command": "PYTHONPATH=. python benchmarks/cuda_decode_sweep.py",
                          "flush": FLUSH, "checks": checks, "rows": rows})


if __name__ == "__main__":
    main()
