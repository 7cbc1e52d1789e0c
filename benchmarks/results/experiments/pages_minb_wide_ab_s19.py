"""Session 19 experiment: the 3-block register cap (min_blocks=3) against the default launch on pages where shared
memory holds fewer blocks: D = 256 (16 query / 8 KV heads) and 8 query heads a KV head (64 / 8, D = 128), medians of
3 interleaved rounds, bench_us(graph, flush="read") of kernel + Triton combine; SDPA best of flash / cuDNN.
Command: PYTHONPATH=. python benchmarks/results/experiments/pages_minb_wide_ab_s19.py OUT.json"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

VARIANTS = {"default": {}, "minb3": dict(min_blocks=3)}
SHAPES = [(16, 8, 256, s, b) for s, b in ((32768, 1), (131072, 1), (32768, 8))] + \
    [(64, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8))]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        ref = decode_attn_ref(q.float(), pages, None, None, scale, block_size=8192)
        times = {n: [] for n in VARIANTS}
        plans = {}
        for n, kw in VARIANTS.items():
            out = cuda.decode_attn_cuda(q, pages, scale, combine="triton", **kw)
            assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2, (n, s, b, lam)
            p = cuda.SplitPlan(q, pages, scale, **kw)
            plans[n] = (p.warps, p.chunk, p.splits)
        for _ in range(3):
            for n, kw in VARIANTS.items():
                times[n].append(bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, pages, scale, combine="triton", **kw),
                                         flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        row = dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa, times=times,
                   plans=plans, **{f"{n}_us": m for n, m in med.items()},
                   **{f"{n}_vs_sdpa": sdpa / m for n, m in med.items()})
        rows.append(row)
        print(f"D{d} {s:>6} b{b} λ{lam}  " + "  ".join(
            f"{n} {med[n]:7.1f} µs x{sdpa / med[n]:.3f} ({plans[n][0]}w {plans[n][2]}sp)" for n in VARIANTS),
            flush=True)
        del pages
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
