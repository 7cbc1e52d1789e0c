"""Session 25: one 8-warp block a multiprocessor (warps=8, min_blocks=1) against the default launch (4-warp blocks,
two a multiprocessor) at key ratios of 0.75 and up, where the kept term is short and a block's fixed costs (its q
table, its partial, the merge's slots) weigh most. Session 23 (launch_w8_regs_ab_s23.py) found 0.993-1.048x there
with at most 4 query heads a KV head and 0.946x with 8. Whole steps (split kernel + Triton combine, CUDA graph, read
flush, medians of five interleaved rounds), pages, each launch first checked against the fp32 reference.
Command: PYTHONPATH=. python benchmarks/results/experiments/w8x1_high_ratio_ab_s25.py OUT.json (W8_LAMS=0.6,0.7: other ratios)
Run: one H200, 2026-11-30 09:01-09:03 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 66b5d09:
w8x1_high_ratio_ab_s25_h200.json; 0.995-1.050x with 2-4 query heads a KV head; landed as cuda.short_kept_block
(3008e9e; BENCHMARKS.md "Session 25" item 5)."""
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

LAUNCHES = {"default": {}, "w8x1": {"warps": 8, "min_blocks": 1}}


def step_fn(q, prefix, scale, **kw):
    plan = cuda.SplitPlan(q, prefix, scale, **kw)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step, dict(cuda.LAST_LAUNCH)


LAMS = tuple(float(x) for x in os.environ.get("W8_LAMS", "0.75,0.8,0.9").split(","))  # W8_LAMS: other key ratios
SHAPES = ((32, 8, 128, 131072, 1), (32, 8, 128, 32768, 8), (32, 8, 128, 65536, 1), (32, 8, 128, 32768, 1),
          (32, 8, 128, 8192, 1), (32, 8, 128, 131072, 2), (32, 8, 128, 8192, 8), (16, 8, 128, 32768, 1),
          (9, 3, 64, 131072, 1), (9, 3, 64, 32768, 1), (9, 3, 64, 32768, 8), (64, 8, 128, 32768, 1))
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in LAMS:
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        prefix = SparKPages.from_compressed(arrays)
        variants = {n: step_fn(q, prefix, scale, **kw) for n, kw in LAUNCHES.items()}
        errs = {n: rel_err(st(), ref) for n, (st, _) in variants.items()}
        assert max(errs.values()) < 1e-2, errs
        times = {n: [] for n in variants}
        for _ in range(5):
            for n, (st, _) in variants.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        launches = {n: {k2: la[k2] for k2 in ("warps", "min_blocks", "chunk", "splits")} for n, (_, la) in
                    variants.items()}
        rows.append({"q_heads": hq, "kv_heads": h, "head_dim": d, "context": s, "batch": b, "key_ratio": lam,
                     "kept": kept_channels(d, lam), "sdpa_us": sdpa, "rel_err": errs, "times": times,
                     "launches": launches, "us": med, "w8x1_speedup": med["default"] / med["w8x1"]})
        print(f"D{d} {hq}/{h} {s // 1024}K b{b} λ{lam}: sdpa {sdpa:6.1f} default {med['default']:6.1f} "
              f"(sdpa x{sdpa / med['default']:.3f}) w8x1 {med['w8x1']:6.1f} (sdpa x{sdpa / med['w8x1']:.3f}) "
              f"w8x1/default x{med['default'] / med['w8x1']:.3f}", flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
        del prefix, variants, arrays
    del q, k, v
    torch.cuda.empty_cache()
