"""Session 25: split sizes that fill every multiprocessor's block slots. The rule (cuda.balanced_chunk) rounds a
split to whole 128-token tiles, so at 128K·b1 with Llama heads (8 rows) it takes 32 splits of 4096 tokens: 256 blocks
on 132 multiprocessors, two on 124 of them and one on 8 (3 % of the block slots empty). A split of any multiple of
32 tokens is allowed (a warp's tile is 32 tokens), so 33 splits of 4000 tokens (the last 3072) give 264 blocks, two
on every multiprocessor. Whole steps (split kernel + Triton combine, CUDA graph, read flush, medians of five
interleaved rounds), pages, every split first checked against the fp32 reference.
Command: PYTHONPATH=. python benchmarks/results/experiments/split_fill_ab_s25.py OUT.json
Run: one H200, 2026-11-30 08:56 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 66b5d09: split_fill_ab_s25_h200.json;
0.937-1.005x; not kept (BENCHMARKS.md "Session 25" item 4)."""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.autotune import cdiv, num_sms  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def step_fn(q, prefix, scale, **kw):
    plan = cuda.SplitPlan(q, prefix, scale, **kw)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step, dict(cuda.LAST_LAUNCH)


SHAPES = ((32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 65536, 1, (0.5, 0.8)), (32, 8, 128, 32768, 1, (0.5, 0.8)),
          (32, 8, 128, 131072, 2, (0.5, 0.8)), (9, 3, 64, 131072, 1, (0.5, 0.8)), (16, 8, 256, 65536, 1, (0.5,)))
sms = num_sms(0)
rows = []
for hq, h, d, s, b, lams in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in lams:
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        prefix = SparKPages.from_compressed(arrays)
        rule, launch = step_fn(q, prefix, scale)
        variants = {f"rule {launch['chunk']}": (rule, launch)}
        for per_sm in range(2, launch["resident_blocks"] + 1):
            splits = per_sm * sms // (b * h)
            chunk = cdiv(cdiv(s, splits), 32) * 32
            if splits >= 1 and chunk != launch["chunk"]:
                variants[f"fill{per_sm} {chunk}"] = step_fn(q, prefix, scale, chunk=chunk)
        errs = {n: rel_err(st(), ref) for n, (st, _) in variants.items()}
        assert max(errs.values()) < 1e-2, errs
        times = {n: [] for n in variants}
        for _ in range(5):
            for n, (st, _) in variants.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        base = next(iter(med.values()))
        rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                         rel_err=errs, times=times, launches={n: la for n, (_, la) in variants.items()},
                         us=med, speedup_vs_rule={n: base / x for n, x in med.items()}))
        print(f"D{d} {hq}/{h} {s // 1024}K b{b} λ{lam}: sdpa {sdpa:6.1f} " + " ".join(
            f"| {n} ({variants[n][1]['splits']}x{b * h}) {x:6.1f} x{base / x:.3f} sdpa x{sdpa / x:.3f}"
            for n, x in med.items()), flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
        del prefix, variants, arrays
    del q, k, v
    torch.cuda.empty_cache()
