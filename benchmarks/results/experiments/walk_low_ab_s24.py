"""Session 24, kernel variants against main's, first of all: both kept walks clear the lowest set bit (x & (x - 1)) and take its position from bfind over
x ^ (x - 1), the top walk over bit-reversed words, so no find-first-set sits on a walk's dependency chain and the bottom
walk's per-entry BREV goes (variants in folders: each holds cuda.py and spark_walk.cu). The walks visit the same
channels in the same order, so outputs must be bit-equal to the first folder's build: checked on ragged cases (pages and
arrays, bf16 / fp16, D = 256 / 128 / 64, DK 13-128, 2-8 query heads a KV head) against the fp32 reference; then whole
steps (split kernel + Triton combine, CUDA graph, read flush, medians of three interleaved rounds), pages, with the
best SDPA backend of the same run.
Command: PYTHONPATH=. python benchmarks/results/experiments/walk_low_ab_s24.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
(the first is the baseline, e.g. main:gpu/base with main's kernel files; AB_QUICK=1: the four target cells only).
Folders: main's kernel files at bb3d104, each variant = main + its patch beside this file (`git apply`, then copy
the two files into a folder).
Runs (one H200 each, 2026-11-30, torch 2.11.0+cu130, triton 3.6.0; BENCHMARKS.md "Session 24"):
  07:33 UTC, AB_QUICK=1, main / low (walk_low_s24.patch) / hybrid (walk_hybrid_s24.patch: only the bottom walk
        changed): walk_low_quick_ab_s24_h200.json; bit-equal; λ = 0.5 1.012-1.013x (low), λ = 0.8 0.998-0.999x.
  07:41 UTC, main / low / trec (walk_low_trec_s24.patch: low + the recovery MMA with tokens as M, one chain):
        walk_low_trec_ab_s24_h200.json; low 0.95-0.96x at λ = 0.3, trec 0.94-1.04x.
  07:46 UTC, main / hybrid / hybrid_trec2 / trec2 (walk_hybrid_trec2_s24.patch, trec2_s24.patch: two MMA chains):
        walk_hybrid_trec2_ab_s24_h200.json; hybrid 0.98-1.005x, trec2 0.95-1.03x.
  07:59 UTC, main / swizzle (858618b's kernel, landed): kv_swizzle_ab_s24_h200.json; bit-equal; λ = 0.5 0.997-1.050x,
        λ = 0.3 / 0.8 0.998-1.002x.
Variants that change the order of the recovery's sums are checked against the baseline to rounding (< 1e-3 of the
reference's norm) instead of bit-equality."""
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
QUICK = bool(int(__import__("os").environ.get("AB_QUICK", "0")))


def step_fn(mod, q, prefix, scale, **kw):
    plan = mod.SplitPlan(q, prefix, scale, **kw)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


checks = []
for hq, h, d, dk, dtype, kw in ((32, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 63, torch.float16, {}),
                                (32, 8, 128, 90, torch.bfloat16, {}), (32, 8, 128, 128, torch.bfloat16, {}),
                                (32, 8, 128, 26, torch.float16, {}), (16, 8, 128, 64, torch.bfloat16, {}),
                                (64, 8, 128, 64, torch.bfloat16, {}), (32, 8, 128, 64, torch.bfloat16, dict(chains=1)),
                                (32, 8, 128, 64, torch.bfloat16, dict(warps=8, min_blocks=1)),
                                (64, 8, 256, 128, torch.bfloat16, {}), (64, 8, 256, 100, torch.float16, {}),
                                (16, 8, 256, 51, torch.bfloat16, {}), (9, 3, 64, 32, torch.bfloat16, {}),
                                (9, 3, 64, 13, torch.float16, {})):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk + hq)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        try:
            outs = {n: step_fn(m, q, prefix, d ** -0.5, **kw)() for n, m in MODS.items()}
        except ValueError as e:  # a launch this case does not admit (e.g. 8 warps past the shared memory)
            print(f"check D{d} G{hq // h} DK{dk} {kw} {form}: skipped ({e})"[:200], flush=True)
            continue
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = {n: torch.equal(outs[BASE], o) for n, o in outs.items()}
        diff = {n: ((o.float() - outs[BASE].float()).norm() / ref.norm()).item() for n, o in outs.items()}
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), launch=kw, form=form, rel_err=err,
                           bit_equal=same, rel_diff_vs_base=diff))
        print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {kw} {form}: {err} bit-equal {same} diff {diff}",
              flush=True)
        # Variants that change the order of the recovery's sums differ from the baseline by rounding only.
        assert max(err.values()) < 1e-2 and all(same[n] or diff[n] < 1e-3 for n in outs)
rows = []
SHAPES = ((32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8))) if QUICK else (
    (32, 8, 128, 131072, 1, (0.3, 0.5, 0.8)), (32, 8, 128, 32768, 8, (0.3, 0.5, 0.8)),
    (32, 8, 128, 32768, 1, (0.5, 0.8)), (32, 8, 128, 8192, 1, (0.5,)), (64, 8, 128, 32768, 1, (0.5,)),
    (16, 8, 256, 32768, 1, (0.5,)), (9, 3, 64, 131072, 1, (0.5, 0.8)))
for hq, h, d, s, b, lams in SHAPES:
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in lams:
        prefix = SparKPages.from_compressed(CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens))
        steps = {n: step_fn(m, q, prefix, scale) for n, m in MODS.items()}
        times = {n: [] for n in steps}
        for _ in range(3):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                         times=times, **{f"{n}_us": x for n, x in med.items()},
                         speedup_vs_base={n: med[BASE] / x for n, x in med.items()}))
        print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} " + " ".join(
            f"{n} {x:7.1f} (x{med[BASE] / x:.3f}, sdpa x{sdpa / x:.3f})" for n, x in med.items()), flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
