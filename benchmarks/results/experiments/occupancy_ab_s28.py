"""Session 28: more warps a multiprocessor at λ = 0.8. With QA_SMEM (ebb6c49) the λ = 0.8 build (D = 128, DK = 26,
8-warp block) needs 126 registers (155 before), and with one stage of small-array buffers its block takes 112,640
bytes of shared memory, so two 8-warp blocks fit a multiprocessor (16 warps) where the default launches one
(`cuda.short_kept_block`, session 25). Static SASS: 1309 instructions a tile with one stage against 1305 with two
(count_tile_loop_s27.py, CPU machine, NVRTC 13.5.37). At 128K·b1, λ = 0.8, a fifth of the warps' samples wait on the V
tile before P·V (BENCHMARKS.md "Session 24" item 2): more warps could hide that. Launches timed against the default:
`w8x2s1` (8 warps, 2 blocks, 1 stage), `w8x2` (8 warps, 2 blocks, 2 stages: D = 64 only fits), `w4x3` (three 4-warp
blocks), `w4x2` (the default before session 25). Whole steps (split kernel + Triton combine, CUDA graph, read flush,
medians of five interleaved rounds), pages, each launch first checked against the fp32 reference; a launch the
kernel does not admit is left out of its row.
Command: PYTHONPATH=. python benchmarks/results/experiments/occupancy_ab_s28.py OUT.json
Run: one H200, 2026-11-30 13:46-13:47 UTC, torch 2.11.0+cu130, triton 3.6.0, code of 81d9e5c
(occupancy_ab_s28_h200.json): w8x2s1 0.919-0.991x, w8x2 0.907-1.009x, w4x3 0.912-1.012x, w4x2 0.919-1.008x against
the default; not kept (BENCHMARKS.md "Session 28" item 5). Since the run its step builder calls folder_ab.whole_step
(the same plan, launch and combine) instead of a copy of it.
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment, rel_err  # noqa: E402
from decode_attention import best_sdpa_us, make_shape  # noqa: E402
from folder_ab import whole_step  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn import cuda  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

LAUNCHES = {"default": {}, "w8x2s1": dict(warps=8, min_blocks=2, stages=1), "w8x2": dict(warps=8, min_blocks=2),
            "w4x3": dict(warps=4, min_blocks=3), "w4x2": dict(warps=4, min_blocks=2)}
CELLS = ((32, 8, 128, 131072, 1, 0.8), (32, 8, 128, 32768, 8, 0.8), (32, 8, 128, 32768, 1, 0.8),
         (32, 8, 128, 8192, 1, 0.8), (9, 3, 64, 131072, 1, 0.8), (9, 3, 64, 32768, 8, 0.8),
         (32, 8, 128, 131072, 1, 0.9))


def step_fn(q, prefix, scale, **kw):
    step = whole_step(cuda, q, prefix, scale, **kw)  # the plan is made here, so LAST_LAUNCH is its launch
    return step, dict(cuda.LAST_LAUNCH)


rows = []
for hq, h, d, s, b, lam in CELLS:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = best_sdpa_us(q, k, v, scale)
    arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, scale, block_size=8192)
    prefix = SparKPages.from_compressed(arrays)
    variants, launches, skipped = {}, {}, {}
    for n, kw in LAUNCHES.items():
        try:
            variants[n], la = step_fn(q, prefix, scale, **kw)
        except (ValueError, RuntimeError) as e:
            skipped[n] = str(e)[:200]
            continue
        launches[n] = {k2: la[k2] for k2 in ("warps", "min_blocks", "stages", "chunk", "splits", "resident_blocks")}
    # a launch that resolves to the default's own configuration is timed once
    for n in list(variants):
        if n != "default" and launches[n] == launches["default"]:
            skipped[n] = "same launch as the default"
            del variants[n]
    errs = {n: rel_err(st(), ref) for n, st in variants.items()}
    assert max(errs.values()) < 1e-2, errs
    times = {n: [] for n in variants}
    for _ in range(5):
        for n, st in variants.items():
            times[n].append(bench_us(st, flush="read"))
    med = {n: statistics.median(t) for n, t in times.items()}
    rows.append({"q_heads": hq, "kv_heads": h, "head_dim": d, "context": s, "batch": b, "key_ratio": lam,
                 "kept": kept_channels(d, lam), "sdpa_us": sdpa, "rel_err": errs, "times": times,
                 "launches": launches, "skipped": skipped, "us": med,
                 "speedup_vs_default": {n: med["default"] / x for n, x in med.items()}})
    print(f"D{d} {hq}/{h} {s // 1024}K b{b} λ{lam}: sdpa {sdpa:6.1f} " + " ".join(
        f"{n} {x:6.1f} (x{med['default'] / x:.3f}, sdpa x{sdpa / x:.3f}, {launches[n]['resident_blocks']}x"
        f"{launches[n]['warps']}w)" for n, x in med.items()), flush=True)
    Path(sys.argv[1]).write_text(json.dumps(dict(environment(), rows=rows), indent=1))
    del prefix, variants, arrays
    del q, k, v
    torch.cuda.empty_cache()
