# Exact script of a session-16 device call (2026-11-29 21:37 UTC, one H200, torch 2.11.0+cu130, triton 3.6.0), run from
# the repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 16: the split size rule with bytes in flight (balanced_chunk, tree) against main's (dd1e141: most blocks
# within 5 % of the lowest load): whole steps (split + combine kernel) in CUDA graphs, read flush, three interleaved
# rounds, each case checked against the fp32 reference first.
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


def main_rule(tokens, rows, sms, wave, tile):  # dd1e141's balanced_chunk
    cands = []
    for splits in range(1, max(1, min(cdiv(tokens, tile), wave // rows)) + 1):
        chunk = cdiv(cdiv(tokens, splits), tile) * tile
        blocks = rows * cdiv(tokens, chunk)
        per_sm = cdiv(blocks, sms)
        cands.append((per_sm * chunk * (1.15 if per_sm == 1 and blocks < sms else 1.0), blocks, chunk))
    lowest = min(c[0] for c in cands)
    return max((b, -l, c) for l, b, c in cands if l <= lowest * 1.05)[2]


rows = []
shapes = [(32, 8, 128, s, b) for s, b in [(8192, 8), (16384, 4), (32768, 2), (32768, 8), (40960, 1), (65536, 1),
                                          (65536, 4), (131072, 2), (131072, 1)]]
shapes += [(9, 3, 64, 131072, 8), (9, 3, 64, 32768, 8)]
for hq, h, d, s, b in shapes:
    torch.cuda.empty_cache()
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    for lam in (0.5, 0.8):
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        plan = cuda.SplitPlan(q, prefix, d ** -0.5)
        new = plan.chunk
        resident = cuda.LAST_LAUNCH["resident_blocks"]
        old = main_rule(s, b * h, num_sms(0), resident * num_sms(0), 32 * plan.warps)
        row = dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, resident=resident,
                   old_chunk=old, new_chunk=new, old_blocks=b * h * cdiv(s, old), new_blocks=b * h * cdiv(s, new))
        if old != new:
            ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5, block_size=8192)
            t = {"old": [], "new": []}
            for c in (old, new):
                row[f"rel_err_{c}"] = rel_err(cuda.decode_attn_cuda(q, prefix, d ** -0.5, chunk=c), ref)
                assert row[f"rel_err_{c}"] < 1e-2
            for _ in range(3):
                for name, c in (("old", old), ("new", new)):
                    t[name].append(bench_us(lambda c=c: cuda.decode_attn_cuda(q, prefix, d ** -0.5, chunk=c),
                                            flush="read"))
            row.update(old_us=statistics.median(t["old"]), new_us=statistics.median(t["new"]), old_runs=t["old"],
                       new_runs=t["new"])
            row["new_vs_old"] = row["old_us"] / row["new_us"]
            print(f"D{d} {s // 1024}K b{b} λ{lam}: chunk {old} ({row['old_blocks']} blocks) {row['old_us']:.1f} µs"
                  f" -> {new} ({row['new_blocks']}) {row['new_us']:.1f} µs = {row['new_vs_old']:.3f}x", flush=True)
        else:
            print(f"D{d} {s // 1024}K b{b} λ{lam}: same chunk {new}", flush=True)
        rows.append(row)
json.dump({**environment(), "command": "PYTHONPATH=. python benchmarks/results/experiments/split_size_ab_s16.py",
           "rows": rows}, open(os.environ["OUT"] + "/split_size_ab_in_flight_h200.json", "w"), indent=1)
