"""Session 19 experiment: (a) the 3-block register cap (min_blocks=3) against the default (2) on pages and on arrays
at λ = 0.5 and 0.8, D = 128; (b) records padded to 64 bytes instead of 128 (layout.RECORD_ALIGN), default launch.
Interleaved over 3 rounds; bench_us(graph, flush="read") of kernel + Triton combine; SDPA best of flash / cuDNN.
Command: PYTHONPATH=. python benchmarks/results/experiments/pages_minb_align_ab_s19.py OUT.json"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape, sdpa_us  # noqa: E402

import sparkv.cache.layout as layout  # noqa: E402
from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

rows = []
for s, b in ((8192, 1), (8192, 8), (32768, 1), (32768, 8), (131072, 1), (131072, 8)):
    q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b + 128)
    scale = 128 ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
        pages = SparKPages.from_compressed(arrays)
        layout.RECORD_ALIGN = 64
        pages64 = SparKPages.from_compressed(arrays)
        layout.RECORD_ALIGN = 128
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        cases = {"pages_minb2": (pages, {}), "pages_minb3": (pages, dict(min_blocks=3)),
                 "arrays_minb2": (arrays, {}), "arrays_minb3": (arrays, dict(min_blocks=3)),
                 "pages64_minb2": (pages64, {})}
        times = {n: [] for n in cases}
        for n, (p, kw) in cases.items():
            if n.startswith("pages64"):
                layout.RECORD_ALIGN = 64  # the kernel's defines read tile_record
            out = cuda.decode_attn_cuda(q, p, scale, combine="triton", **kw)
            layout.RECORD_ALIGN = 128
            assert ((out.float() - ref).norm() / ref.norm()).item() < 1e-2, (n, s, b, lam)
        for _ in range(3):
            for n, (p, kw) in cases.items():
                layout.RECORD_ALIGN = 64 if n.startswith("pages64") else 128
                times[n].append(bench_us(lambda p=p, kw=kw: cuda.decode_attn_cuda(q, p, scale, combine="triton", **kw),
                                         flush="read"))
                layout.RECORD_ALIGN = 128
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(context=s, batch=b, head_dim=128, key_ratio=lam, sdpa_us=sdpa, times=times,
                         bytes={"pages": pages.nbytes(), "pages64": pages64.nbytes(), "arrays": arrays.nbytes()},
                         **{f"{n}_us": m for n, m in med.items()}))
        print(f"{s:>6} b{b} λ{lam} sdpa {sdpa:7.1f}  " + "  ".join(f"{n} {med[n]:7.1f} x{sdpa / med[n]:.3f}"
                                                              for n in cases), flush=True)
        del arrays, pages, pages64
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
