"""Session 20 experiment: wave-aware splits. Blocks in pairs: the leading part of each pair (dispatched first, one a
multiprocessor; its warps are older, and the warp schedulers favour them: BENCHMARKS.md "Session 12", item 2) takes
``lead`` more tokens than the trailing part. Variants: the plain split, the pair order alone (lead 0), and leads of
1-4 tiles a warp. Pages (what the cache keeps), default launch, kernel + Triton combine under bench_us(graph,
flush="read"), medians of 3 interleaved rounds; SDPA best of flash / cuDNN in the same run.
Needs the kernel's LEAD parameter (lead_split_s20.patch, or main once landed).
Command: PYTHONPATH=. python benchmarks/results/experiments/lead_split_ab_s20.py OUT.json"""
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
from sparkv.kernels.autotune import num_sms  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

SHAPES = [(32, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8), (32768, 1), (65536, 1), (131072, 8), (8192, 8))] + \
    [(9, 3, 64, s, b) for s, b in ((131072, 1), (32768, 8))]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        ref = decode_attn_ref(q.float(), pages, None, None, scale, block_size=8192)
        base = cuda.SplitPlan(q, pages, scale)
        tile = 32 * base.warps
        blocks = base.splits * b * h
        variants = {"plain": None, "lead0": 0}
        if blocks > num_sms(q.device.index):  # pairs share a multiprocessor only when there are more blocks than SMs
            for n in (1, 2, 3, 4):
                if n * tile < base.chunk:
                    variants[f"lead{n}t"] = n * tile
        else:
            variants = {"plain": None}
        times = {n: [] for n in variants}
        for n, lead in variants.items():
            out = cuda.decode_attn_cuda(q, pages, scale, combine="triton", lead=lead)
            err = ((out.float() - ref).norm() / ref.norm()).item()
            assert err < 1e-2, (n, s, b, lam, err)
        for _ in range(3):
            for n, lead in variants.items():
                times[n].append(bench_us(lambda lead=lead: cuda.decode_attn_cuda(q, pages, scale, combine="triton",
                                                                                 lead=lead), flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        row = dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa, times=times,
                   chunk=base.chunk, splits=base.splits, blocks=blocks, warps=base.warps,
                   leads={n: lead for n, lead in variants.items()},
                   **{f"{n}_us": m for n, m in med.items()}, **{f"{n}_vs_sdpa": sdpa / m for n, m in med.items()})
        rows.append(row)
        print(f"D{d} {s:>6} b{b} λ{lam} chunk {base.chunk} blocks {blocks} sdpa {sdpa:7.1f}  " + "  ".join(
            f"{n} {med[n]:7.1f} x{sdpa / med[n]:.3f}" for n in variants), flush=True)
        del pages
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
