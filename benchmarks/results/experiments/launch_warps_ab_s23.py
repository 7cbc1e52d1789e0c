"""Session 23 experiment: the same warps per multiprocessor in fewer, larger blocks. At λ = 0.8 (DK = 26, 155
registers) three 4-warp blocks fit a multiprocessor (the split rule uses two at 128K·b1: 32 splits a KV head);
2 x 6 warps and 1 x 12 warps keep 12 warps resident but make fewer splits per (row, KV head), so the merge reads
fewer partials and the block's set-up (q table) is shared by more warps. Also one 8-warp block (session 19's variant). Pages, bf16,
kernel + Triton combine in a CUDA graph, read flush, medians of three interleaved rounds; a variant that does not fit
the multiprocessor is skipped. Needs ``warps`` 6 and 12 admitted by ``cuda.launch_params`` (session 23's
launch_warps_s23.patch on cba4e9d). Command:
PYTHONPATH=. python benchmarks/results/experiments/launch_warps_ab_s23.py OUT.json
Result (H200, 2026-11-30 06:07 UTC, code of cba4e9d + the patch): BENCHMARKS.md "Session 23" item 2."""
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

VARIANTS = {"default": {}, "w8x1": dict(warps=8, min_blocks=1), "w6x2": dict(warps=6, min_blocks=2),
            "w12x1": dict(warps=12, min_blocks=1)}
SHAPES = [(32, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8), (32768, 1), (8192, 1), (131072, 8))] + \
    [(9, 3, 64, s, b) for s, b in ((32768, 1), (131072, 1), (32768, 8))]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
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
