"""Prepared in session 21, not run (no device time left): the kept walk's word list with its read-ahead (WL=1, main's
WALK_LIST at D = 256) against the list read when needed (WL=2) and the register queue (WL=0), all three in the tree
of walk_list_d128_s21.patch, which reads the WL environment variable in cuda.defines (so each plan below is built
with the walk set just before it). Static SASS in the experiments README row. First ragged cases against the fp32
reference, bit-equal across the three walks (same channels, same order), then whole steps (kernel + Triton combine,
bench_us graph, flush="read"), medians of 3 interleaved rounds, pages.
Command (after `git apply benchmarks/results/experiments/walk_list_d128_s21.patch`):
PYTHONPATH=. python benchmarks/results/experiments/walk_list_readahead_ab_s21.py OUT.json"""
import json
import os
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
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

WALKS = ("0", "1", "2")


def step_fn(walk, q, prefix, scale):
    os.environ["WL"] = walk
    plan = cuda.SplitPlan(q, prefix, scale)
    assert plan.defines.get("WALK_LIST", 0) == int(walk), plan.defines
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


checks = []
for hq, h, d, dk, dtype in ((16, 8, 256, 128, torch.bfloat16), (16, 8, 256, 51, torch.float16),
                            (32, 8, 128, 64, torch.bfloat16), (32, 8, 128, 26, torch.bfloat16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, dk), v, lens))
    ref = decode_attn_ref(q.float(), prefix, None, None, d ** -0.5)
    outs = {w: step_fn(w, q, prefix, d ** -0.5)() for w in WALKS}
    err = {w: ((o.float() - ref).norm() / ref.norm()).item() for w, o in outs.items()}
    same = all(torch.equal(outs["0"], o) for o in outs.values())
    checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), rel_err=err, bit_equal=same))
    print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]}: {err} bit-equal {same}", flush=True)
    assert max(err.values()) < 1e-2 and same
rows = []
for hq, h, d, s, b in ((16, 8, 256, 32768, 1), (16, 8, 256, 32768, 8), (32, 8, 128, 131072, 1),
                       (32, 8, 128, 32768, 8)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    for lam in (0.5, 0.8):
        prefix = SparKPages.from_compressed(
            CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        steps = {w: step_fn(w, q, prefix, d ** -0.5) for w in WALKS}
        times = {w: [] for w in steps}
        for _ in range(3):
            for w, st in steps.items():
                times[w].append(bench_us(st, flush="read"))
        med = {w: statistics.median(t) for w, t in times.items()}
        rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, times=times,
                         **{f"walk{w}_us": x for w, x in med.items()}))
        print(f"D{d} {s} b{b} λ{lam}: queue {med['0']:7.1f} list {med['1']:7.1f} list, no read-ahead "
              f"{med['2']:7.1f}", flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
