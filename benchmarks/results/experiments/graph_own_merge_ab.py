# Exact script of a session-16 device call (2026-11-29 21:43 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run from
# the repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 16: in a CUDA graph, the split kernel's own merge (its last block per KV head) with counters allocated
# once before capture (every launch leaves them at zero, so no memset node) against the Triton combine kernel
# (main's graph path): whole steps in CUDA graphs, read flush, three interleaved rounds, each checked first.
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import json, os, statistics, torch
from common import bench_us, rel_err, environment
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton

persistent = torch.zeros(4096, dtype=torch.int32, device="cuda")
main_counters = cuda._counters
rows = []
shapes = [(32, 8, 128, 131072, 1), (32, 8, 128, 32768, 8), (32, 8, 128, 8192, 1), (32, 8, 128, 32768, 1),
          (32, 8, 128, 131072, 8), (9, 3, 64, 32768, 8)]
for hq, h, d, s, b in shapes:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    for lam in (0.5, 0.8):
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
        plan = cuda.SplitPlan(q, prefix, d ** -0.5)
        row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, splits=plan.splits,
                   can_combine=plan.can_combine(plan.splits))
        if not row["can_combine"]:
            rows.append(row); print(row); continue
        fns = {"combine_kernel": lambda: cuda.decode_attn_cuda(q, prefix, d ** -0.5, combine="triton"),
               "own_merge": lambda: cuda.decode_attn_cuda(q, prefix, d ** -0.5, combine="kernel")}
        t = {n: [] for n in fns}
        cuda._counters = lambda device, n: persistent[:n]
        try:
            for n, fn in fns.items():
                row[f"rel_err_{n}"] = rel_err(fn(), ref)
                assert row[f"rel_err_{n}"] < 1e-2
            for _ in range(3):
                for n, fn in fns.items():
                    t[n].append(bench_us(fn, flush="read"))
            torch.cuda.synchronize()
            row["counters_zero_after"] = bool((persistent == 0).all())
            g = torch.cuda.CUDAGraph()  # the graph's own result, after all those replays
            with torch.cuda.graph(g):
                out = fns["own_merge"]()
            for _ in range(3):
                g.replay()
            row["rel_err_graph_own_merge"] = rel_err(out, ref)
        finally:
            cuda._counters = main_counters
        for n in fns:
            row[f"{n}_us"] = statistics.median(t[n]); row[f"{n}_runs"] = t[n]
        row["own_vs_combine"] = row["combine_kernel_us"] / row["own_merge_us"]
        print(f"D{d} {s // 1024}K b{b} λ{lam} ({plan.splits} splits): combine kernel {row['combine_kernel_us']:.1f} µs,"
              f" own merge {row['own_merge_us']:.1f} µs = {row['own_vs_combine']:.3f}x; counters zero "
              f"{row['counters_zero_after']}, graph rel err {row['rel_err_graph_own_merge']:.1e}", flush=True)
        rows.append(row)
json.dump({**environment(), "command": "PYTHONPATH=. python benchmarks/results/experiments/graph_own_merge_ab.py",
           "rows": rows}, open(os.environ["OUT"] + "/graph_own_merge_h200.json", "w"), indent=1)
