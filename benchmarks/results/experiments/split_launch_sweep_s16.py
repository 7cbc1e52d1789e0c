# Exact script of a session-16 device call (2026-11-29 21:44 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run from
# the repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 16: at the target shapes, whole steps (CUDA graphs, read flush, three interleaved rounds) of the CUDA kernel
# at every split size around the rule's (7f3d94f) and with other launch parameters at the rule's split.
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import json, os, statistics, torch
from common import bench_us, rel_err, environment
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton

rows = []
cases = [(32768, 8, 0.8, [1024, 2048, 2816, 4096, 5504, 6656, 7168, 7680, 8192, 9216, 10240, 16384]),
         (131072, 1, 0.8, [1024, 1536, 2048, 2432, 2688, 3072, 3584, 4096, 5504, 8192]),
         (32768, 8, 0.5, [2048, 4096, 5504, 6656, 8192, 10240, 16384]),
         (131072, 1, 0.5, [1024, 2048, 2688, 3072, 4096, 5504, 8192])]
launches = [dict(chains=1), dict(min_blocks=3), dict(stages=1), dict(warps=2), dict(warps=8), dict(warps=8, min_blocks=1)]
for s, b, lam, chunks in cases:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b + 128)
    prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
    ref = decode_attn_ref(q.float(), prefix, None, None, 128 ** -0.5, block_size=8192)
    rule = cuda.SplitPlan(q, prefix, 128 ** -0.5).chunk
    variants = {f"chunk={c}": dict(chunk=c) for c in sorted(set(chunks) | {rule})}
    variants.update({",".join(f"{k}={v}" for k, v in kw.items()): kw for kw in launches})
    t, errs, launch = {n: [] for n in variants}, {}, {}
    for n, kw in list(variants.items()):
        try:
            errs[n] = rel_err(cuda.decode_attn_cuda(q, prefix, 128 ** -0.5, **kw), ref)
            launch[n] = dict(cuda.LAST_LAUNCH)
        except Exception as e:  # a launch that does not fit: recorded, not timed
            errs[n] = repr(e); variants.pop(n); continue
        assert errs[n] < 1e-2, (n, errs[n])
    for _ in range(3):
        for n, kw in variants.items():
            t[n].append(bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, prefix, 128 ** -0.5, **kw), flush="read"))
    res = {n: dict(us=statistics.median(t[n]), runs=t[n], rel_err=errs[n], launch=launch[n]) for n in variants}
    base = res[f"chunk={rule}"]["us"]
    print(f"{s // 1024}K b{b} λ{lam}: rule chunk {rule} {base:.1f} µs", flush=True)
    for n, r in sorted(res.items(), key=lambda x: x[1]["us"]):
        print(f"   {n:<28} {r['us']:7.1f} µs  {base / r['us']:.3f}x  splits {r['launch'].get('splits')} "
              f"resident {r['launch'].get('resident_blocks')}", flush=True)
    rows.append(dict(context=s, batch=b, key_ratio=lam, head_dim=128, q_heads=32, kv_heads=8, rule_chunk=rule,
                     results=res, errors={n: e for n, e in errs.items() if isinstance(e, str)}))
json.dump({**environment(), "command": "PYTHONPATH=. python benchmarks/results/experiments/split_launch_sweep_s16.py",
           "rows": rows}, open(os.environ["OUT"] + "/split_launch_sweep_h200.json", "w"), indent=1)
