"""Session 26: the kept term on the tensor cores (spark_walk.cu KEPT_MMA) against the walk (main's kernel files).

The walk costs ~14 instructions a kept entry, GQ of them FMAs (8 with 5-8 query heads a KV head). KEPT_MMA builds
each lane's B registers (kept values at their channels) by nibbles of its token's bitmap word from a 4-value window
of the kept row and two byte permutes, and takes the kept term with one m16n8k16 MMA per 16 channels and 8 tokens:
~18 instructions a nibble whatever the head count (static SASS of the tile loop at D = 128, DK = 64, 4 query heads:
1474-1573 against the walk's 1910; `scripts/compile_sm90.py`-style count on the 2-core CPU machine, NVRTC 13.5.37).
Checks first (every variant against the fp32 reference and the baseline to rounding; each twice, bit-equal; a variant
that fails one is reported under "failed" and not timed, the session 26 runs had none), then
whole steps (split kernel + Triton combine, CUDA graph, read flush, medians of three interleaved rounds), pages.
Command: PYTHONPATH=. python benchmarks/results/experiments/kept_mma_ab_s26.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
KMMA_SHAPES=g4 (default: Llama heads, 2, 4 and 8 query heads a KV head), g8 (5-8 query heads a KV head) or g4b
(session 27's candidates over λ = 0.25-0.8: `bash benchmarks/results/experiments/prepared_kmma_g4_s26.sh`).
Folders hold cuda.py and spark_walk.cu: main's (a5583b9), and the tree with KEPT_MMA; for the first run its rule
was widened to every D = 128, DK % 8 == 0 case (`kept_mma_all_s26.patch` on the landed tree).
Runs (one H200 each, 2026-11-30, torch 2.11.0+cu130; BENCHMARKS.md "Session 26" item 1):
  10:47 UTC, KMMA_SHAPES=g4, main / kmma (every D = 128, DK % 8 == 0): kept_mma_ab_s26_h200.json; 34 checks passed;
        4 query heads a KV head 0.77-0.91x, 2 0.83x, 8 1.32x.
  10:51 UTC, KMMA_SHAPES=g8, main / kmma8 (the landed rule, 5-8 query heads): kept_mma8_ab_s26_h200.json; 34 checks
        passed; λ = 0.5 1.11-1.63x (8) and 1.46x (6), λ = 0.75 0.99-1.06x, 4 query heads (no KEPT_MMA) 1.003x.
"""
import importlib.util
import json
import os
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
FAILED: dict[str, list] = {}  # variant -> the checks it failed


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
                                (64, 8, 128, 26, torch.bfloat16, dict(chunk=3008, warps=8, min_blocks=1)),
                                (64, 8, 128, 64, torch.float16, {}), (16, 8, 128, 64, torch.bfloat16, {}),
                                (32, 8, 128, 128, torch.bfloat16, {}), (32, 8, 128, 8, torch.float16, {}),
                                (32, 8, 128, 40, torch.bfloat16, {}), (32, 8, 128, 90, torch.float16, {}),
                                (32, 8, 128, 52, torch.bfloat16, {}), (32, 8, 128, 96, torch.bfloat16, {}),
                                (32, 8, 128, 63, torch.float16, dict(seq=3001)),
                                (64, 8, 128, 25, torch.bfloat16, dict(seq=2999)), (16, 8, 256, 51, torch.bfloat16, {}),
                                (64, 8, 256, 128, torch.float16, {}), (9, 3, 64, 32, torch.bfloat16, {})):
    kw = dict(kw)
    seq = kw.pop("seq", 3000)  # odd DK with an odd length: rows of separate arrays start off 16-byte lines
    q, k, v, stat, _ = make_shape(3, hq, h, seq, d, dtype, seed=dk + hq)
    lens = torch.tensor([seq, 1237, 33], dtype=torch.int32, device="cuda")
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
        assert err[BASE] < 1e-2 and repeat[BASE], "the baseline itself fails"
        for n in outs:  # a variant that fails any check is not timed (the others still are)
            if not (err[n] < 1e-2 and (same[n] or diff[n] < 1e-3) and repeat[n]):
                FAILED.setdefault(n, []).append(checks[-1])
                print(f"FAILED check: {n} at D{d} G{hq // h} DK{dk} {kw} {form}", flush=True)
for n in FAILED:
    MODS.pop(n, None)
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, failed=FAILED, rows=[]), indent=1))
rows = []
SHAPES = {
    "g4": ((32, 8, 128, 131072, 1, (0.5, 0.75, 0.8)), (32, 8, 128, 32768, 8, (0.5,)), (32, 8, 128, 32768, 1, (0.5,)),
           (32, 8, 128, 8192, 1, (0.5,)), (64, 8, 128, 32768, 1, (0.5,)), (16, 8, 128, 32768, 1, (0.5,))),
    # next session's candidates (kept_mma_g4_*_s26.patch): 2-8 query heads a KV head over key ratios
    "g4b": ((32, 8, 128, 131072, 1, (0.25, 0.3, 0.5, 0.625, 0.8)), (32, 8, 128, 32768, 8, (0.3, 0.5)),
            (32, 8, 128, 32768, 1, (0.5,)), (32, 8, 128, 8192, 1, (0.5,)), (16, 8, 128, 32768, 1, (0.5,)),
            (64, 8, 128, 32768, 1, (0.5,)), (9, 3, 64, 131072, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.5,))),
    "g8": ((64, 8, 128, 131072, 1, (0.5, 0.75)), (64, 8, 128, 32768, 8, (0.5, 0.75)),
           (64, 8, 128, 32768, 1, (0.5, 0.75)), (64, 8, 128, 8192, 1, (0.5,)), (48, 8, 128, 32768, 1, (0.5,)),
           (32, 8, 128, 32768, 1, (0.5,))),
}[os.environ.get("KMMA_SHAPES", "g4")]
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
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, failed=FAILED, rows=rows),
                                                indent=1))
        del prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
