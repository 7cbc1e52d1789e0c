"""Session 20 experiment: the CUDA kernel on pages against the same kernel on arrays, across key ratios, with the
default launch of 83de353 (registers capped at 200). Llama heads (32 / 8, D = 128) and SmolLM2's (9 / 3, D = 64),
bf16, λ = 0.3-0.8; kernel + Triton combine under bench_us(graph, flush="read"), medians of 3 interleaved rounds, both
checked against the fp32 reference first.
Command: PYTHONPATH=. python benchmarks/results/experiments/pages_vs_arrays_ratio_s20.py OUT.json"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

SHAPES = [(32, 8, 128, s, b) for s, b in ((131072, 1), (32768, 8), (32768, 1))] + \
    [(9, 3, 64, s, b) for s, b in ((131072, 8), (32768, 8), (131072, 1))]
rows = []
for hq, h, d, s, b in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    for lam in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        forms = {"pages": SparKPages.from_compressed(arrays), "arrays": arrays}
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        for n, prefix in forms.items():
            out = cuda.decode_attn_cuda(q, prefix, scale, combine="triton")
            err = ((out.float() - ref).norm() / ref.norm()).item()
            assert err < 1e-2, (n, s, b, lam, err)
        times = {n: [] for n in forms}
        for _ in range(3):
            for n, prefix in forms.items():
                times[n].append(bench_us(lambda p=prefix: cuda.decode_attn_cuda(q, p, scale, combine="triton"),
                                         flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        row = dict(head_dim=d, q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, kept=kept_channels(d, lam),
                   times=times, config=dict(cuda.LAST_LAUNCH), pages_bytes=forms["pages"].nbytes(),
                   arrays_bytes=arrays.nbytes(), **{f"{n}_us": m for n, m in med.items()},
                   pages_vs_arrays=med["arrays"] / med["pages"])
        rows.append(row)
        print(f"D{d} {s:>6} b{b} λ{lam} DK{row['kept']:>3}: pages {med['pages']:7.1f} arrays {med['arrays']:7.1f} "
              f"pages x{row['pages_vs_arrays']:.3f}", flush=True)
        del forms, arrays
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
