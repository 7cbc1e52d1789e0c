# Exact script of a session-16 device call (2026-11-29 21:52 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run from
# the repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 16: one 8-warp block per multiprocessor where only one 4-warp block fits its shared memory (the tree's
# launch_params) against 4-warp blocks (`warps=4, min_blocks=2`, main's defaults), each with its own default split.
# Whole steps (split + combine kernel) in CUDA graphs, read flush, three interleaved rounds, checked first.
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
llama, g8, wide = (32, 8, 128), (64, 8, 128), (8, 2, 256)
cases = [(wide, 0.9, s, b, torch.bfloat16) for s, b in [(131072, 1), (32768, 8), (8192, 1), (32768, 1)]]
cases += [(wide, 0.9, 131072, 1, torch.float16), (llama, 0.1, 131072, 1, torch.bfloat16),
          (llama, 0.1, 32768, 8, torch.bfloat16), (llama, 0.1, 8192, 1, torch.bfloat16)]
cases += [(g8, 0.3, s, b, torch.bfloat16) for s, b in [(131072, 1), (32768, 4), (8192, 1)]]
cases += [(llama, 0.5, 131072, 1, torch.bfloat16), (g8, 0.5, 32768, 1, torch.bfloat16)]
for (hq, h, d), lam, s, b, dtype in cases:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, dtype, seed=s + b + d)
    prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
    variants = {"tree": {}, "w4": dict(warps=4, min_blocks=2)}
    row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, dtype=str(dtype))
    ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
    for n, kw in variants.items():
        row[f"rel_err_{n}"] = rel_err(cuda.decode_attn_cuda(q, prefix, d ** -0.5, **kw), ref)
        row[f"launch_{n}"] = dict(cuda.LAST_LAUNCH)
        assert row[f"rel_err_{n}"] < 1e-2, row
    if row["launch_tree"]["warps"] == 4:
        rows.append(row); print(f"{hq}/{h} D{d} {s // 1024}K b{b} λ{lam} {dtype}: tree keeps 4 warps", flush=True)
        continue
    t = {n: [] for n in variants}
    for _ in range(3):
        for n, kw in variants.items():
            t[n].append(bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, prefix, d ** -0.5, **kw), flush="read"))
    for n in variants:
        row[f"{n}_us"] = statistics.median(t[n]); row[f"{n}_runs"] = t[n]
    row["tree_vs_w4"] = row["w4_us"] / row["tree_us"]
    lt, l4 = row["launch_tree"], row["launch_w4"]
    print(f"{hq}/{h} D{d} {s // 1024}K b{b} λ{lam} {dtype}: 4 warps ({l4['splits']} splits, {l4['resident_blocks']} "
          f"res) {row['w4_us']:.1f} µs -> {lt['warps']} warps ({lt['splits']} splits, {lt['resident_blocks']} res) "
          f"{row['tree_us']:.1f} µs = {row['tree_vs_w4']:.3f}x", flush=True)
    rows.append(row)
json.dump({**environment(), "command": "PYTHONPATH=. python benchmarks/results/experiments/lone_block_ab_s16.py",
           "rows": rows}, open(os.environ["OUT"] + "/lone_block_ab_h200.json", "w"), indent=1)
