# Exact script of a session-16 device call (2026-11-29 21:46 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run from
# the repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 16: (1) the split rule preferring the fewest blocks per multiprocessor that keep 64 KiB in flight (tree)
# against 7f3d94f's (the most bytes in flight, then the lowest load); (2) at λ = 0.5, one 8-warp block per
# multiprocessor (`warps=8, min_blocks=1`) against the default two 4-warp blocks. Whole steps (split + combine kernel)
# in CUDA graphs, read flush, three interleaved rounds, each case checked against the fp32 reference first.
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import json, os, statistics, torch
from common import bench_us, rel_err, environment
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.autotune import cdiv, num_sms
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton


def rule_7f3(tokens, rows, sms, wave, tile, tile_bytes):  # 7f3d94f's balanced_chunk
    cands = []
    for splits in range(1, max(1, min(cdiv(tokens, tile), wave // rows)) + 1):
        chunk = cdiv(cdiv(tokens, splits), tile) * tile
        blocks = rows * cdiv(tokens, chunk)
        per_sm = cdiv(blocks, sms)
        load = per_sm * chunk * (1.15 if per_sm == 1 and blocks < sms else 1.0)
        cands.append((load, min(per_sm * tile_bytes, 65536), blocks, chunk))
    lowest = min(c[0] for c in cands)
    return max((f, -l, b, c) for l, f, b, c in cands if l <= lowest * 1.05)[3]


rows = []
llama = [(12288, 1), (24576, 8), (49152, 1), (98304, 4), (131072, 1), (8192, 1), (32768, 1), (8192, 8), (32768, 8),
         (131072, 8)]
smol = [(8192, 8), (32768, 8), (65536, 1), (131072, 1), (131072, 8), (32768, 1)]
shapes = [(32, 8, 128, s, b) for s, b in llama] + [(9, 3, 64, s, b) for s, b in smol]
for hq, h, d, s, b in shapes:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    for lam in (0.5, 0.8):
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        plan = cuda.SplitPlan(q, prefix, d ** -0.5)
        resident = cuda.LAST_LAUNCH["resident_blocks"]
        tile = 32 * plan.warps
        old = rule_7f3(s, b * h, num_sms(0), resident * num_sms(0), tile,
                       tile * cdiv(prefix.nbytes(), b * h * prefix.num_tokens))
        variants = {"main": dict(chunk=old)}
        if plan.chunk != old:
            variants["new"] = dict(chunk=plan.chunk)
        if lam == 0.5:
            variants["w8"] = dict(warps=8, min_blocks=1)
        row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, resident=resident,
                   main_chunk=old, new_chunk=plan.chunk)
        if len(variants) == 1:
            rows.append(row); print(f"D{d} {s // 1024}K b{b} λ{lam}: nothing to compare"); continue
        ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
        t = {n: [] for n in variants}
        for n, kw in variants.items():
            row[f"rel_err_{n}"] = rel_err(cuda.decode_attn_cuda(q, prefix, d ** -0.5, **kw), ref)
            row[f"launch_{n}"] = dict(cuda.LAST_LAUNCH)
            assert row[f"rel_err_{n}"] < 1e-2
        for _ in range(3):
            for n, kw in variants.items():
                t[n].append(bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, prefix, d ** -0.5, **kw), flush="read"))
        line = f"D{d} {s // 1024}K b{b} λ{lam}: main {old} ({row['launch_main']['splits']} splits) "
        for n in variants:
            row[f"{n}_us"] = statistics.median(t[n]); row[f"{n}_runs"] = t[n]
        line += f"{row['main_us']:.1f} µs"
        for n in variants:
            if n != "main":
                row[f"{n}_vs_main"] = row["main_us"] / row[f"{n}_us"]
                line += (f" | {n} chunk {row[f'launch_{n}']['chunk']} ({row[f'launch_{n}']['splits']} splits) "
                         f"{row[f'{n}_us']:.1f} µs = {row[f'{n}_vs_main']:.3f}x")
        print(line, flush=True)
        rows.append(row)
json.dump({**environment(), "command": "PYTHONPATH=. python benchmarks/results/experiments/split_rule_warps_ab_s16.py",
           "rows": rows}, open(os.environ["OUT"] + "/split_rule_warps_ab_h200.json", "w"), indent=1)
