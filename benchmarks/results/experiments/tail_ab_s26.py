"""Session 26: a block's last tiles balanced over its warps (spark_walk.cu TAIL; cuda.TAIL_TILES), against main.

Session 25's kernel timeline (`timeline_s25_h200.json`) showed the warps of one 8-warp block ending 5.8 µs apart
(median block, 128K·b1·λ=0.8) and 8.7 µs (32K·b8·λ=0.8), with no order by warp index: a block ends with its slowest
warp. In a TAIL build the last TAIL to TAIL + 7 tiles of a block's split are claimed at run time from a counter in
shared memory; each of them runs with its own softmax state, left in its own slot, and the block merges the slots in
a fixed order, so the output does not depend on which warp took which tile.

Folders hold cuda.py and spark_walk.cu: the first is the baseline (main's files), the others main's tree with the
TAIL change and `TAIL_TILES` set per folder (0 = the change present but off). Checks first: every variant against
the fp32 reference and the baseline (to rounding: the tail's states sum in another order), on ragged rows with the
default launch and with one split a row (so that the balanced tiles run), in both forms (pages, arrays), bf16 / fp16;
and each variant twice, bit-equal (claims vary between runs, the output must not). Then whole steps (split kernel +
Triton combine in a CUDA graph, read flush, medians of three interleaved rounds), pages.
Command: PYTHONPATH=. python benchmarks/results/experiments/tail_ab_s26.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
(folders: `SETUP_ONLY=1 bash benchmarks/results/experiments/tail_s26_runs.sh`, or that script runs it).
Runs (one H200 each, 2026-11-30, main at a5583b9, torch 2.11.0+cu130; BENCHMARKS.md "Session 26" item 3):
  10:29 UTC, first build, t8 / t16 / t24: tail_ab_s26_h200.json; 0.865-0.899x at the long λ = 0.8 cells, 0.73-0.87x
        at short ones (the scale's conversion placed next to its load).
  10:37 UTC, scale kept raw, r (no tail) / t8 / t16: tail_scale_ab_s26_h200.json; r 0.995-1.008x, t8 0.988-0.999x long,
        0.891-0.953x short.
  10:40 UTC, + the cheaper merge (tail_s26.patch): tail_merge_ab_s26_h200.json; t8 0.992-1.002x long, 0.889-0.956x
        short; r 0.987-1.001x. Not kept.
"""
import importlib.util
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
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def load(name, folder):
    spec = importlib.util.spec_from_file_location(f"m_{name}", Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODS = {a.split(":")[0]: load(*a.split(":")) for a in sys.argv[2:]}
BASE = next(iter(MODS))


def step_fn(mod, q, prefix, scale, **kw):
    plan = mod.SplitPlan(q, prefix, scale, **kw)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


checks = []
for hq, h, d, dk, dtype, kw in ((32, 8, 128, 26, torch.bfloat16, {}), (32, 8, 128, 26, torch.float16, {}),
                                (32, 8, 128, 32, torch.bfloat16, {}), (16, 8, 128, 26, torch.bfloat16, {}),
                                (9, 3, 64, 13, torch.bfloat16, {}), (32, 8, 128, 64, torch.bfloat16, {}),
                                (32, 8, 128, 64, torch.bfloat16, dict(warps=8, min_blocks=1)),
                                (32, 8, 128, 26, torch.bfloat16, dict(chunk=3008)),
                                (32, 8, 128, 26, torch.float16, dict(chunk=1024)),
                                (32, 8, 128, 90, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)),
                                (9, 3, 64, 13, torch.float16, dict(chunk=3008, warps=8, min_blocks=1)),
                                (64, 8, 128, 26, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1))):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk + hq)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        try:
            steps = {n: step_fn(m, q, prefix, d ** -0.5, **kw) for n, m in MODS.items()}
            outs = {n: st() for n, st in steps.items()}
            again = {n: st() for n, st in steps.items()}
        except ValueError as e:  # a launch this case does not admit
            print(f"check D{d} G{hq // h} DK{dk} {kw} {form}: skipped ({e})"[:200], flush=True)
            continue
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = {n: torch.equal(outs[BASE], o) for n, o in outs.items()}
        repeat = {n: torch.equal(outs[n], again[n]) for n in outs}
        diff = {n: ((o.float() - outs[BASE].float()).norm() / ref.norm()).item() for n, o in outs.items()}
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), launch=kw, form=form, rel_err=err,
                           bit_equal=same, repeat_bit_equal=repeat, rel_diff_vs_base=diff))
        print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {kw} {form}: err {err} same {same} repeat {repeat}",
              flush=True)
        assert max(err.values()) < 1e-2 and all(same[n] or diff[n] < 1e-3 for n in outs) and all(repeat.values())
rows = []
SHAPES = ((32, 8, 128, 131072, 1, (0.5, 0.8, 0.9)), (32, 8, 128, 32768, 8, (0.5, 0.8)),
          (32, 8, 128, 32768, 1, (0.8,)), (32, 8, 128, 8192, 1, (0.8,)), (32, 8, 128, 131072, 2, (0.8,)),
          (9, 3, 64, 131072, 1, (0.8,)))
for hq, h, d, s, b, lams in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in lams:
        prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        steps = {n: step_fn(m, q, prefix, scale) for n, m in MODS.items()}
        launch = {}
        for n, st in steps.items():
            st()
            launch[n] = dict(getattr(MODS[n], "LAST_LAUNCH", {}))
        times = {n: [] for n in steps}
        for _ in range(3):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                         launch={n: {k: v for k, v in x.items() if isinstance(v, (int, float, str))}
                                 for n, x in launch.items()},
                         times=times, **{f"{n}_us": x for n, x in med.items()},
                         speedup_vs_base={n: med[BASE] / x for n, x in med.items()}))
        print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} " + " ".join(
            f"{n} {x:7.1f} (x{med[BASE] / x:.3f}, sdpa x{sdpa / x:.3f})" for n, x in med.items()), flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
