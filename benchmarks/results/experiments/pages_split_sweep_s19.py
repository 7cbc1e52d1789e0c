"""Session 19 experiment: split size and launch variants of the CUDA kernel reading pages (SparKPages), at the two
target shapes, λ = 0.8 and 0.5, D = 128, bf16, one H200; each time is bench_us(graph, flush="read") of the kernel
plus the Triton combine kernel (what the table's captured step runs), against cuDNN / flash SDPA in the same run.
Command: PYTHONPATH=. python benchmarks/results/experiments/pages_split_sweep_s19.py OUT.json"""
import json
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

rows = []
for s, b in ((131072, 1), (32768, 8)):
    q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b + 128)
    scale = 128 ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.8, 0.5):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
        pages = SparKPages.from_compressed(arrays)
        ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
        variants = [("default", None, {})]
        base = cuda.SplitPlan(q, pages, scale).chunk
        for c in sorted({base // 2, base * 3 // 4, base - 256, base - 128, base + 128, base + 256, base * 5 // 4,
                         base * 3 // 2, base * 2}):
            if c >= 128 and c % 128 == 0 and c < s:
                variants.append((f"chunk={c}", c, {}))
        variants += [("stages=1", None, dict(stages=1)), ("warps=8,min_blocks=1", None, dict(warps=8, min_blocks=1)),
                     ("min_blocks=3", None, dict(min_blocks=3)), ("chains=1", None, dict(chains=1))]
        for name, chunk, kw in variants:
            for form, prefix in (("pages", pages), ("arrays", arrays)):
                if form == "arrays" and name != "default" and not name.startswith("chunk"):
                    continue
                fn = lambda: cuda.decode_attn_cuda(q, prefix, scale, chunk=chunk, combine="triton", **kw)  # noqa
                out = fn()
                err = ((out.float() - ref).norm() / ref.norm()).item()
                us = bench_us(fn, flush="read")
                plan = cuda.SplitPlan(q, prefix, scale, chunk, **kw)
                row = dict(context=s, batch=b, key_ratio=lam, form=form, variant=name, chunk=plan.chunk,
                           splits=plan.splits, us=us, sdpa_us=sdpa, speedup_vs_sdpa=sdpa / us, rel_err=err)
                rows.append(row)
                print(f"{s:>6} b{b} λ{lam} {form:6} {name:22} chunk {plan.chunk:6} splits {plan.splits:3} "
                      f"{us:7.1f} µs  x{sdpa / us:.3f}  err {err:.1e}", flush=True)
        del arrays, pages
    del q, k, v
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
