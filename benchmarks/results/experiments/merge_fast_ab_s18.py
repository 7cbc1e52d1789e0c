# Exact script of a session-18 device call (2026-11-30 00:03 UTC, one lent H200, torch 2.11.0+cu130, triton 3.6.0, CUDA 13.0), run from the repository root on branch exp/merge-fast (merge_fast_s18.patch beside this file, applied to main at e786afd) as `PYTHONPATH=. python gpu/merge_ab.py`; $OUT the device's output folder; kept as it ran.
"""Session 18: the split kernel's own merge, main's (7 dependent L2 round trips at 32 slots) against a faster one
(MERGE_FAST: the partials' first loads issued with the log-sum-exps', 16 slots a thread in flight, slot groups where
threads outnumber outputs), in CUDA graphs with counters allocated before capture, against main's graph path (the
Triton combine kernel) and the split kernel alone; whole steps, read flush, three interleaved rounds, each checked."""
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import json, os, statistics, torch
from common import bench_us, rel_err, environment
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton

persistent = torch.zeros(8192, dtype=torch.int32, device="cuda")
main_counters = cuda._counters
rows = []
shapes = [(32, 8, 128, 131072, 1, 0.8), (32, 8, 128, 131072, 1, 0.5), (32, 8, 128, 32768, 1, 0.8),
          (32, 8, 128, 8192, 1, 0.8), (32, 8, 128, 32768, 8, 0.8), (9, 3, 64, 131072, 1, 0.8),
          (9, 3, 64, 32768, 8, 0.8), (64, 8, 128, 32768, 1, 0.8), (16, 4, 256, 16384, 2, 0.8),
          (32, 8, 128, 5000, 3, 0.7)]
for hq, h, d, s, b, lam in shapes:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    if b == 3:
        lens = torch.tensor([s, 1234, 37], dtype=torch.int32, device="cuda")
    prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
    ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
    plan = cuda.SplitPlan(q, prefix, d ** -0.5)
    o_part, lse_part = plan.partials()
    row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, splits=plan.splits,
               warps=plan.warps)
    fns = {"combine_kernel": lambda: cuda.decode_attn_cuda(q, prefix, d ** -0.5, combine="triton"),
           "own_merge": lambda: cuda.decode_attn_cuda(q, prefix, d ** -0.5, combine="kernel"),
           "own_fast": lambda: cuda.decode_attn_cuda(q, prefix, d ** -0.5, combine="kernel", merge_fast=1),
           "split_only": lambda: plan.launch(o_part, lse_part)}
    cuda._counters = lambda device, n: persistent[:n]
    try:
        for n in ("combine_kernel", "own_merge", "own_fast"):
            out = fns[n]()
            row[f"rel_err_{n}"] = rel_err(out, ref)
            assert row[f"rel_err_{n}"] < 1e-2, (n, row)
        row["fast_equals_own"] = bool(torch.equal(fns["own_fast"](), fns["own_merge"]()))
        row["fast_max_diff_own"] = (fns["own_fast"]().float() - fns["own_merge"]().float()).abs().max().item()
        t = {n: [] for n in fns}
        if s >= 8192 and b <= 8:
            for _ in range(3):
                for n, fn in fns.items():
                    t[n].append(bench_us(fn, flush="read"))
        torch.cuda.synchronize()
        row["counters_zero_after"] = bool((persistent == 0).all())
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            gout = fns["own_fast"]()
        for _ in range(3):
            g.replay()
        torch.cuda.synchronize()
        row["rel_err_graph_own_fast"] = rel_err(gout, ref)
        assert row["rel_err_graph_own_fast"] < 1e-2
    finally:
        cuda._counters = main_counters
    for n in fns:
        if t[n]:
            row[f"{n}_us"] = statistics.median(t[n]); row[f"{n}_runs"] = t[n]
    msg = " ".join(f"{n} {row[f'{n}_us']:.1f}" for n in fns if f"{n}_us" in row)
    print(f"D{d} G{hq // h} {s // 1024}K b{b} λ{lam} ({plan.splits} splits, {plan.warps} warps): {msg} µs; "
          f"rel err {row['rel_err_own_fast']:.1e}, fast==own {row['fast_equals_own']} "
          f"(max diff {row['fast_max_diff_own']:.1e}), counters zero {row['counters_zero_after']}", flush=True)
    rows.append(row)
json.dump({**environment(), "command": "PYTHONPATH=. python gpu/merge_ab.py", "rows": rows},
          open(os.environ["OUT"] + "/merge_fast_ab_h200.json", "w"), indent=1)
