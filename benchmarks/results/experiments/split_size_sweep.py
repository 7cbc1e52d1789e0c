# Exact script of a session-15 device call (2026-11-29, one H200, torch 2.11.0+cu130, triton 3.6.0), run from the
# repository root as `PYTHONPATH=. python <this file>` with $OUT the device's output folder; kept as it ran.
# Session 15: split size (chunk) of the CUDA split kernel at small contexts, whole steps (split + combine) in graphs.
import sys; sys.path.insert(0, "benchmarks"); sys.path.insert(0, ".")
import json, os, torch
from common import bench_us, rel_err, environment
from decode_attention import make_shape
from sparkv.cache.layout import CompressedKV
from sparkv.config import kept_channels
from sparkv.kernels.decode_attn import cuda
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.select_pack.fused import select_pack_triton
rows = []
for s, b in [(8192, 1), (16384, 1), (32768, 1), (8192, 8)]:
    q, k, v, stat, lens = make_shape(b, 32, 8, s, 128, torch.bfloat16, seed=s + b)
    for lam in (0.5, 0.8):
        prefix = CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens)
        ref = decode_attn_ref(q.float(), prefix, None, None, 128 ** -0.5, block_size=8192)
        line = []
        for chunk in (None, 256, 384, 512, 768, 1024, 2048):
            if chunk and chunk >= s: continue
            out = cuda.decode_attn_cuda(q, prefix, 128 ** -0.5, chunk=chunk)
            err = rel_err(out, ref); assert err < 1e-2, err
            us = bench_us(lambda: cuda.decode_attn_cuda(q, prefix, 128 ** -0.5, chunk=chunk), flush="read")
            splits = cuda.LAST_LAUNCH.get("splits"); ch = cuda.LAST_LAUNCH.get("chunk")
            rows.append(dict(context=s, batch=b, key_ratio=lam, chunk=ch, splits=splits, us=us, rel_err=err, default=chunk is None))
            line.append(f"{ch}:{us:.1f}")
        print(f"{s//1024}K b{b} λ{lam}: " + "  ".join(line), flush=True)
json.dump({**environment(), "rows": rows}, open(os.environ["OUT"] + "/chunk_small_contexts.json", "w"), indent=1)
