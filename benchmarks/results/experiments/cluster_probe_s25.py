"""Session 25 probe: how many thread-block clusters of 8-16 split blocks can be resident at once for the launches of
3008e9e (one 8-warp block a multiprocessor at λ = 0.8; two 4-warp blocks at λ = 0.5), Llama heads, pages. A merge of
a row's splits through distributed shared memory needs all of a row's split blocks in one cluster, resident together:
at 128K·b1 that is 8 clusters (one per KV head) of 16 blocks (λ = 0.8) or 32 (λ = 0.5, above the largest cluster).
Session 23 found 7 clusters of 16 for the 8-warp build (merge_prize_s23.py); this asks every size from 8 to 16.
Command: PYTHONPATH=. python benchmarks/results/experiments/cluster_probe_s25.py OUT.json
Run: one H200, 2026-11-30 09:37 UTC, code of 451c704: cluster_probe_s25_h200.json; λ = 0.8: 7 clusters of 10-16, 15 of 8;
λ = 0.5: 14 of 13-16, 30 of 8; too few (BENCHMARKS.md "Session 25" item 8)."""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import environment  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

out = sys.argv[1]
src = Path("benchmarks/results/experiments/merge_prize_s23.py").read_text()
helper = src[src.index("class LaunchAttr"):src.index("VARIANTS = ")]
ns = {}
exec("import ctypes\n" + helper, ns)  # the ctypes structures and max_active_clusters, as session 23 ran them
rows = []
for lam in (0.8, 0.5):
    q, k, v, stat, lens = make_shape(1, 32, 8, 131072, 128, torch.bfloat16, seed=3)
    pages = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(128, lam)), v, lens))
    plan = cuda.SplitPlan(q, pages, 128 ** -0.5)
    clusters = {c: ns["max_active_clusters"](plan, c) for c in range(8, 17)}
    rows.append({"key_ratio": lam, "warps": plan.warps, "splits": plan.splits, "smem": plan.smem,
                 "max_active_clusters": clusters})
    print(f"λ{lam}: {plan.warps} warps, {plan.splits} splits a KV head, {plan.smem} B smem, max active clusters "
          f"{clusters}", flush=True)
    del q, k, v, pages
Path(out).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
