"""Session 21 (H200, 2026-11-30 04:06 UTC, walk_list_ab_h200.json): at D = 256 the kept-term walk reads its token's
kept words from a list in shared memory (WALK_LIST) instead of shifting a queue of 8 words in registers every step
(main before it). Static SASS of the tile loop (compile_sm90.py --cuda --pages --cuda-launch registers=0, CPU): D =
256, 2 query heads a KV head, DK = 128 5297 -> 4099, DK = 51 3204 -> 2548; D = 64 and 128 keep the queue (the list
cost more there: 2022 -> 2089 at D = 128, DK = 64). First 8 ragged cases against the fp32 reference and bit-equal to
main's build (the walk visits the same channels in the same order), then whole steps (kernel + Triton combine,
bench_us graph, flush="read"), medians of 3 interleaved rounds, pages and arrays, with the best SDPA backend of the
same run. Measured: bit-equal everywhere; 1.12-1.23x; λ = 0.8 now 1.08-1.18x the best SDPA (main: 0.91-1.02x),
λ = 0.5 0.57-0.63x (main: 0.49-0.54x). Landed (91077ad). The measured tree was that commit's kernel and launcher but for
two launcher rules added after it, which choose the same builds for every case here: no list with more than 4 query
heads a KV head, nor where it would not fit the block's shared memory (without_walk_list_beyond).
Needs main's kernel files of before the change in a folder (`mkdir -p gpu/base && for f in cuda.py spark_walk.cu; do
git show 4820d64:sparkv/kernels/decode_attn/$f > gpu/base/$f; done`).
Command: PYTHONPATH=. python benchmarks/results/experiments/walk_list_ab_s21.py OUT.json gpu/base"""
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


MODS = {"main": load("m_main", sys.argv[2]), "list": load("m_list", "sparkv/kernels/decode_attn")}


def step_fn(mod, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


checks = []
for hq, h, dk, dtype in ((16, 8, 128, torch.bfloat16), (16, 8, 51, torch.float16), (32, 8, 77, torch.bfloat16),
                         (16, 8, 26, torch.bfloat16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, 256, dtype, seed=dk)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, 256 ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        outs = {n: step_fn(m, q, prefix, 256 ** -0.5)() for n, m in MODS.items()}
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = torch.equal(outs["main"], outs["list"])
        checks.append(dict(group=hq // h, kept=dk, dtype=str(dtype), form=form, rel_err=err, bit_equal=same))
        print(f"check D256 G{hq // h} DK{dk} {str(dtype)[6:]} {form}: {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and same
rows = []
for hq, h, s, b in ((16, 8, 32768, 1), (16, 8, 32768, 8)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, 256, torch.bfloat16, seed=s + b)
    scale = 256 ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(256, lam)), v, lens)
        for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
            steps = {n: step_fn(m, q, prefix, scale) for n, m in MODS.items()}
            times = {n: [] for n in steps}
            for _ in range(3):
                for n, st in steps.items():
                    times[n].append(bench_us(st, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(q_heads=hq, kv_heads=h, context=s, batch=b, key_ratio=lam, form=form, sdpa_us=sdpa,
                             times=times, **{f"{n}_us": x for n, x in med.items()},
                             list_vs_main=med["main"] / med["list"]))
            print(f"D256 G{hq // h} {s} b{b} λ{lam} {form:6}: sdpa {sdpa:7.1f} main {med['main']:7.1f} "
                  f"list {med['list']:7.1f} x{med['main'] / med['list']:.3f} (vs sdpa {sdpa / med['list']:.2f})",
                  flush=True)
            Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del arrays, prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
