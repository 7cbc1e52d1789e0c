"""Host cost of one decode-attention call, next to its GPU time.

Eager ``model.generate`` (transformers launches every kernel from Python, no CUDA graph) pays the host time of each
attention call once per layer and step; when that exceeds the GPU time, the step is bound by the host and the bytes
saved on the GPU do not show. Per shape and implementation this measures:

* ``gpu_us``: the median GPU time of one call (CUDA-graph replays, L2 flushed by a read: ``common.bench_us``);
* ``eager_us``: wall-clock time per call over ``--calls`` calls issued back to back (no synchronisation in
  between; one at the end), median of 5 repeats: the host's launch cost whenever it exceeds the GPU time.

Implementations: SparK through ``decode_attn`` (the CUDA split kernel, the Triton split kernel for the dense tail,
and the merge done by the CUDA kernel's last blocks, or by the Triton combine kernel: ``combine=triton``), our dense
kernel (λ = 0), and torch SDPA (flash backend) over the same prefix + tail as one dense cache. Every implementation is
checked against the fp32 reference first.

    PYTHONPATH=. python benchmarks/decode_host_overhead.py
    # -> benchmarks/results/decode_host_overhead_h200.json
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, bench_us, environment, parse_gpu_args, rel_err, script_parser, write_json  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, DenseKeys  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda, decode_attn  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

# (context, batch): a model-like step of Llama-3.1-8B's attention layout (32 query / 8 KV heads, D = 128).
SHAPES = [(8192, 1), (32768, 1), (32768, 8)]
TAIL = 16  # dense tail tokens (decode steps since the prefix was compressed)


def eager_us(fn, calls: int) -> float:
    fn()
    torch.cuda.synchronize()
    per_call = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        per_call.append(1e6 * (time.perf_counter() - t) / calls)
    return statistics.median(per_call)


def main() -> None:
    p = script_parser(__doc__, RESULTS / "decode_host_overhead_h200.json")
    p.add_argument("--calls", type=int, default=200)
    args = parse_gpu_args(p, "decode_host_overhead.py")
    if args.calls < 1:
        sys.exit(f"--calls must be >= 1, got {args.calls}")
    rows = []
    for s, b in SHAPES:
        q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b)
        tk, tv = make_shape(b, 32, 8, TAIL, 128, torch.bfloat16, seed=7)[1:3]
        scale = 128 ** -0.5
        spark = CompressedKV(select_pack_triton(k, stat, kept_channels(128, 0.8)), v, lens)
        dense = CompressedKV(DenseKeys(k), v, lens)
        full_k, full_v = torch.cat([k, tk], 2), torch.cat([v, tv], 2)

        def sdpa():
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(q, full_k, full_v, scale=scale, enable_gqa=True)

        def triton_combine():
            # The CUDA split kernel with the Triton combine kernel (the merge the kernel does itself refused).
            original = cuda.SplitPlan.can_combine
            cuda.SplitPlan.can_combine = lambda self, slots: False
            try:
                return decode_attn(q, spark, tk, tv, scale)
            finally:
                cuda.SplitPlan.can_combine = original

        impls = {
            "spark@0.8": lambda: decode_attn(q, spark, tk, tv, scale),
            "spark@0.8 combine=triton": triton_combine,
            "dense kernel": lambda: decode_attn(q, dense, tk, tv, scale),
            "sdpa flash": sdpa,
        }
        ref_spark = decode_attn_ref(q.float(), spark, tk, tv, scale, block_size=8192)
        ref_dense = decode_attn_ref(q.float(), dense, tk, tv, scale, block_size=8192)
        for name, fn in impls.items():
            err = rel_err(fn(), ref_spark if name.startswith("spark") else ref_dense)
            if err > 1e-2:
                sys.exit(f"{name} at {s} x b{b}: relative error {err:.2e} > 1e-2; nothing is timed")
            row = dict(context=s, batch=b, tail=TAIL, impl=name, rel_err=err,
                       gpu_us=bench_us(fn, flush="read"), eager_us=eager_us(fn, args.calls))
            rows.append(row)
            print(f"{s // 1024}K b{b} {name:<26} gpu {row['gpu_us']:8.1f} µs  eager {row['eager_us']:8.1f} µs/call",
                  flush=True)
    env = environment()
    write_json(args.out, {**env, "command": "PYTHONPATH=. python benchmarks/decode_host_overhead.py",
                          "calls": args.calls, "rows": rows})
    print("\n| context | batch | implementation | GPU µs | eager µs / call |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['context'] // 1024}K | {r['batch']} | {r['impl']} | {r['gpu_us']:.1f} | {r['eager_us']:.1f} |")


if __name__ == "__main__":
    main()
