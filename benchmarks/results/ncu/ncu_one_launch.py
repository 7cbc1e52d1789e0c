"""The split kernel launched three times for Nsight Compute (the scripts here profile the third, `-s 2 -c 1`): Llama
heads (32 query, 8 KV, D = 128), bf16, pages, seed 1, full rows; prints the launch plan first.
Usage: python benchmarks/results/ncu/ncu_one_launch.py FOLDER BATCH CONTEXT KEY_RATIO, FOLDER holding a tree's
cuda.py and spark_walk.cu (the library's own: sparkv/kernels/decode_attn). Run from the repository root."""
import importlib.util
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
sys.path.insert(0, ".")
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

folder, batch, context, lam = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
spec = importlib.util.spec_from_file_location("variant", Path(folder) / "cuda.py")
cuda = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cuda)
q, k, v, stat, lens = make_shape(batch, 32, 8, context, 128, torch.bfloat16, seed=1)
pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens))
plan = cuda.SplitPlan(q, pages, 128 ** -0.5)
print("plan", plan.warps, plan.chunk, plan.splits, flush=True)
o, lse = plan.partials()
for _ in range(3):
    plan.launch(o, lse)
torch.cuda.synchronize()
