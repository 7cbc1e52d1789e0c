"""Session 23: the queue walk keeps only the words it can reach (cuda.walk_depth, DEPTH_TOP / DEPTH_BOT in
spark_walk.cu; this A/B ran the change's first form, a WALK_DEPTH macro in spark_walk.cu computing the same depths,
which compiles to the same SASS: checked for DK = 64 and 63 on the CPU). With two walks of DK / 2
kept bits each, a walk never needs its NW-th nonempty word when the other walk's bits cannot fit in one word; at
D = 128 and DK = 64, 3 of 4 words, two SELs fewer a step: 2022 -> 1890 SASS instructions a tile, DK = 90 2665 -> 2468,
DK = 26 unchanged; `python scripts/compile_sm90.py --cuda --pages --dk N`) against main's kernel (the tree's files in a
folder). The walk's order and arithmetic are unchanged, so the outputs must be bit-equal: checked first on ragged
cases (pages and arrays, bf16 / fp16, D = 256 / 128 / 64, DK from 13 to 128, 1-8 query heads a KV head) against the
fp32 reference and main's build; then whole steps (split kernel + Triton combine, CUDA graph, read flush, medians of
three interleaved rounds), pages, with the best SDPA backend of the same run.
Needs main's kernel files in a folder (`mkdir -p gpu/base && for f in cuda.py spark_walk.cu; do git show
<main>:sparkv/kernels/decode_attn/$f > gpu/base/$f; done`).
Command: PYTHONPATH=. python benchmarks/results/experiments/walk_depth_ab_s23.py OUT.json gpu/base
Result (H200, 2026-11-30 06:26-06:28 UTC, main = cba4e9d's kernel files): BENCHMARKS.md "Session 23" item 6."""
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
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODS = {"main": load("m_main", sys.argv[2]), "depth": load("m_depth", "sparkv/kernels/decode_attn")}


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
        same = torch.equal(outs["main"], outs["depth"])
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), launch=kw, form=form, rel_err=err,
                           bit_equal=same))
        print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {kw} {form}: {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and same
rows = []
for hq, h, d, s, b, lams in ((32, 8, 128, 131072, 1, (0.3, 0.5, 0.8)), (32, 8, 128, 32768, 8, (0.3, 0.5, 0.8)),
                             (32, 8, 128, 32768, 1, (0.5,)), (32, 8, 128, 8192, 1, (0.5,)),
                             (64, 8, 128, 32768, 1, (0.5,)), (16, 8, 256, 32768, 1, (0.5,)),
                             (9, 3, 64, 131072, 1, (0.5,))):
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
                         times=times, **{f"{n}_us": x for n, x in med.items()}, depth_vs_main=med["main"] / med["depth"]))
        print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} main {med['main']:7.1f} depth {med['depth']:7.1f} "
              f"x{med['main'] / med['depth']:.3f} (vs sdpa {sdpa / med['main']:.3f} -> {sdpa / med['depth']:.3f})",
              flush=True)
        Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
