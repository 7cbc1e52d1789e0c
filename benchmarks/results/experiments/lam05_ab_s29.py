"""Session 29: three things at the λ = 0.5 targets' cells, in one run.

1. Three 4-warp blocks a multiprocessor (`w4x3s1`: warps=4, min_blocks=3, stages=1). With QA_SMEM (session 28) the
   λ = 0.5 build (D = 128, DK = 64) fits the 168 registers three blocks allow with no stack frame and 1847 SASS
   instructions a tile against 1853 at the default's 200 (`count_tile_loop_s27.py FOLDER 128 64 4 4 3 1 168
   QA_SMEM=1`, 2-core CPU machine, NVRTC 13.5.37), and with one stage its block takes 76,288 bytes of shared memory,
   so three fit (12 warps, against 8). At λ = 0.5 a quarter of the warps' samples wait on their own fixed-latency
   dependencies (BENCHMARKS.md "Session 24" item 2), which more warps could cover. Session 20 measured a 3-block
   launch (168 registers) there before QA_SMEM, when the build had another schedule.
2. Session 24's lowest-bit walk (`walk_low_s24.patch`) on today's kernel: 1918 instructions a tile (1853 main).
3. A timing bound: `nomath_s29.patch` drops the kept term and the recovery (scores are 0: wrong outputs, so it is not
   checked), keeping every copy, wait, the softmax and P·V. Its time is what the step would take with the SparK math
   free, with this kernel's load structure.

Variants are (folder, launch) pairs; every checked variant must match the fp32 reference and main (to rounding) on
ragged rows, pages and arrays, before any timing. Whole steps (split kernel + Triton combine, CUDA graph, read flush,
medians of interleaved rounds), pages, Llama heads unless said.
4. (Second run, with a `w5` folder: main's files, its launcher admitting 5-warp blocks.) Two 5-warp blocks a
   multiprocessor (`w5x2`, 10 warps: 111,744 bytes of shared memory a block without QA_SMEM, which would take it past
   two; the compiler then takes 168 registers) and one 8-warp block at the 200-register cap (`main_w8x1r200`).
Commands: PYTHONPATH=. python benchmarks/results/experiments/lam05_ab_s29.py OUT.json main:DIR low:DIR nomath:DIR;
the second run: ... OUT2.json main:DIR w5:DIR (DIRs: main's cuda.py + spark_walk.cu, and those with the patches
applied; `prepared_lam05_s29.sh` makes them).
Runs: one H200, 2026-11-30, torch 2.11.0+cu130, triton 3.6.0, code of f491b7b. 14:18 UTC (lam05_ab_s29_h200.json):
nomath 1.199x / 1.215x SDPA at 128K·b1 / 32K·b8 λ = 0.5 (main 1.143x / 1.169x); w4x3s1 0.89-0.95x, w4x2s1 0.89-0.98x,
low 0.996-1.028x (1.008x / 0.999x at the targets' cells). 14:24 UTC (lam05_occupancy_ab_s29_h200.json): w5x2
0.724-0.979x, main_w8x1r200 0.928-1.027x. None kept (BENCHMARKS.md "Session 29" items 1 and 3).
"""
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import best_sdpa_us, make_shape  # noqa: E402
from folder_ab import CHECK_LENGTHS, MAX_DIFF_VS_BASE, MAX_REL_ERR, load_folders, whole_step  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

W4X3 = dict(warps=4, min_blocks=3, stages=1)
FIRST_RUN = {"main", "main_w4x3s1", "main_w4x2s1", "low", "low_w4x3s1", "nomath", "nomath_w4x3s1"}
VARIANTS = {"main": ("main", {}), "main_w4x3s1": ("main", W4X3), "main_w4x2s1": ("main", dict(stages=1)),
            "low": ("low", {}), "low_w4x3s1": ("low", W4X3),
            "nomath": ("nomath", {}), "nomath_w4x3s1": ("nomath", W4X3),
            # second run: 10 and 8 warps a multiprocessor at the same 2 blocks / 1 block (w5: warps=5 admitted)
            "main_w8x1r200": ("main", dict(warps=8, min_blocks=1, registers=200)), "w5x2": ("w5", dict(warps=5))}
UNCHECKED = {"nomath", "nomath_w4x3s1"}
CHECKS = ((32, 8, 128, 64, torch.bfloat16), (32, 8, 128, 26, torch.bfloat16), (32, 8, 128, 64, torch.float16),
          (9, 3, 64, 32, torch.bfloat16), (16, 8, 256, 128, torch.bfloat16))
# (q heads, KV heads, head_dim, context, batch, key ratios)
CELLS = ((32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8)), (32, 8, 128, 32768, 1, (0.5,)),
         (32, 8, 128, 8192, 1, (0.5,)), (9, 3, 64, 131072, 1, (0.5,)))
ROUNDS = 3


def steps_for(mods, q, prefix, scale, names):
    out, launch, skipped = {}, {}, {}
    for n in names:
        folder, kw = VARIANTS[n]
        try:
            out[n] = whole_step(mods[folder], q, prefix, scale, **kw)
            out[n]()
        except ValueError as e:
            skipped[n] = str(e)[:200]
            out.pop(n, None)
            continue
        launch[n] = {k: x for k, x in mods[folder].LAST_LAUNCH.items() if isinstance(x, (int, float, str))}
    return out, launch, skipped


def main(argv):
    out, mods = Path(argv[0]), load_folders(argv[1:])
    second = "w5" in mods  # the second run: main against the occupancy variants only
    names = [n for n, (folder, _) in VARIANTS.items() if n == "main" or (folder in mods and (n in FIRST_RUN) != second)]
    checks, failed = [], {}
    for hq, h, d, dk, dtype in CHECKS:
        q, k, v, stat, _ = make_shape(1 + len(CHECK_LENGTHS), hq, h, 3000, d, dtype, seed=dk + hq)
        lens = torch.tensor([3000, *CHECK_LENGTHS], dtype=torch.int32, device=q.device)
        arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
        ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
        for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
            steps, launch, skipped = steps_for(mods, q, prefix, d ** -0.5, [n for n in names if n not in UNCHECKED])
            outs = {n: st() for n, st in steps.items()}
            again = {n: st() for n, st in steps.items()}
            err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
            diff = {n: ((o.float() - outs["main"].float()).norm() / ref.norm()).item() for n, o in outs.items()}
            same = {n: torch.equal(o, outs["main"]) for n, o in outs.items()}
            repeat = {n: torch.equal(outs[n], again[n]) for n in outs}
            label = f"D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {form}"
            checks.append(dict(case=label, rel_err=err, rel_diff_vs_main=diff, bit_equal=same, repeat=repeat,
                               launch=launch, skipped=skipped))
            print(f"check {label}: err {max(err.values()):.1e} same {same} skipped {list(skipped)}", flush=True)
            for n in outs:
                if not (err[n] < MAX_REL_ERR and diff[n] < MAX_DIFF_VS_BASE and repeat[n]):
                    failed.setdefault(n, []).append(label)
    record = dict(environment(), variants={n: [f, kw] for n, (f, kw) in VARIANTS.items()}, checks=checks,
                  failed=failed)
    names = [n for n in names if n not in failed]
    rows = []
    for hq, h, d, s, b, lams in CELLS:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        scale = d ** -0.5
        sdpa = best_sdpa_us(q, k, v, scale)
        for lam in lams:
            prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v,
                                                             lens))
            steps, launch, skipped = steps_for(mods, q, prefix, scale, names)
            times = {n: [] for n in steps}
            for _ in range(ROUNDS):
                for n, st in steps.items():
                    times[n].append(bench_us(st, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                             launch=launch, skipped=skipped, times=times, us=med,
                             vs_main={n: med["main"] / x for n, x in med.items()},
                             vs_sdpa={n: sdpa / x for n, x in med.items()}))
            print(f"D{d} {hq}/{h} {s // 1024}K b{b} λ{lam}: sdpa {sdpa:6.1f} " + " ".join(
                f"{n} {x:6.1f} ({med['main'] / x:.3f}, {sdpa / x:.3f}x)" for n, x in med.items()), flush=True)
            out.write_text(json.dumps(dict(record, rows=rows), indent=1))
            del prefix, steps
        del q, k, v
        torch.cuda.empty_cache()
    out.write_text(json.dumps(dict(record, rows=rows), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
