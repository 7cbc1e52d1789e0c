"""Session 23 experiment, second run: one 8-warp block a multiprocessor against the default launch (4-warp blocks,
the 200-register cap), as launched (w8x1: no cap, so 255 registers where the build uses them, e.g. DK = 64) and with
the default's cap (w8x1r200), over λ 0.3 / 0.5 / 0.8 / 0.9 and four head layouts (32 / 8 and SmolLM2's 9 / 3 over
contexts and batches, 64 / 8 and 16 / 8 at 32K·b1). Pages, bf16, kernel + Triton combine in a CUDA graph, read
flush, medians of three interleaved rounds, every variant first checked against the fp32 reference. Runs on main (8 warps
are admitted there; it ran with launch_warps_s23.patch applied, which only admits 6 and 12); made as a copy of
launch_warps_ab_s23.py. Command:
PYTHONPATH=. python benchmarks/results/experiments/launch_w8_regs_ab_s23.py OUT.json
Result (H200, 2026-11-30 06:10 UTC, code of cba4e9d): BENCHMARKS.md "Session 23" item 2."""
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

VARIANTS = {"default": {}, "w8x1": dict(warps=8, min_blocks=1), "w8x1r200": dict(warps=8, min_blocks=1, registers=200)}
SHAPES = [(32, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8), (32768, 1), (8192, 1), (8192, 8))] + \
    [(9, 3, 64, s, b) for s, b in ((32768, 1), (131072, 1), (32768, 8))] + [(64, 8, 128, 32768, 1), (16, 8, 128, 32768, 1)]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.3, 0.5, 0.8, 0.9):
        pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        ref = decode_attn_ref(q.float(), pages, None, None, scale, block_size=8192)
        live, plans, errs = {}, {}, {}
        for n, kw in VARIANTS.items():
            try:
                p = cuda.SplitPlan(q, pages, scale, **kw)
            except (RuntimeError, ValueError) as e:
                plans[n] = f"skipped: {e}"[:200]
                continue
            out = cuda.decode_attn_cuda(q, pages, scale, combine="triton", **kw)
            errs[n] = ((out.float() - ref).norm() / ref.norm()).item()
            assert errs[n] < 1e-2, (n, s, b, lam, errs[n])
            plans[n] = (p.warps, p.chunk, p.splits)
            live[n] = kw
        times = {n: [] for n in live}
        for _ in range(3):
            for n, kw in live.items():
                times[n].append(bench_us(lambda kw=kw: cuda.decode_attn_cuda(q, pages, scale, combine="triton", **kw),
                                         flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        row = dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa, times=times,
                   plans=plans, rel_err=errs, **{f"{n}_us": m for n, m in med.items()},
                   **{f"{n}_vs_sdpa": sdpa / m for n, m in med.items()})
        rows.append(row)
        print(f"D{d} {s:>6} b{b} λ{lam} sdpa {sdpa:7.1f}  " + "  ".join(
            f"{n} {med[n]:7.1f} x{sdpa / med[n]:.3f} ({plans[n][2]}sp)" for n in live), flush=True)
        del pages
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
