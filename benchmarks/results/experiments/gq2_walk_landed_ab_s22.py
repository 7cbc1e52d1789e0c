"""Session 22: main's kernel as landed (2-column q table for 1-2 query heads a KV head up to D = 128; the list walk
at D = 256 reading its next word when the current one runs out, without guard entries) against the kernel of 04e2947
(session 21's HEAD: 4 columns everywhere, the list walk reading a word ahead). q_table_gq2_ab_s21.py with one change:
the 2-column check expects GQ = 2 only up to D = 128. First ragged cases against the fp32 reference and bit-equal to
04e2947's build, then whole steps (kernel + Triton combine, bench_us graph, flush="read"), medians of 3 interleaved
rounds, pages and arrays, with the best SDPA backend of the same run. "main" below is 04e2947, "gq2" the landed tree.
Needs 04e2947's kernel files in a folder (`mkdir -p gpu/base && for f in cuda.py spark_walk.cu; do git show
04e2947:sparkv/kernels/decode_attn/$f > gpu/base/$f; done`).
Command: PYTHONPATH=. python benchmarks/results/experiments/gq2_walk_landed_ab_s22.py OUT.json gpu/base"""
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


MODS = {"main": load("m_main", sys.argv[2]), "gq2": load("m_gq2", "sparkv/kernels/decode_attn")}


def step_fn(mod, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step, plan.defines["GQ"]


checks = []
for hq, h, d, dk, dtype in ((16, 8, 256, 128, torch.bfloat16), (16, 8, 256, 51, torch.float16),
                            (16, 8, 128, 64, torch.bfloat16), (8, 8, 128, 26, torch.float16),
                            (6, 3, 64, 13, torch.bfloat16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk)
    lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        outs, gq = {}, {}
        for n, m in MODS.items():
            st, gq[n] = step_fn(m, q, prefix, d ** -0.5)
            outs[n] = st()
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = torch.equal(outs["main"], outs["gq2"])
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), form=form, rel_err=err,
                           bit_equal=same, gq=gq))
        print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {form}: GQ {gq} {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and same and gq["gq2"] == (2 if d <= 128 else 4)
rows = []
for hq, h, d, s, b in ((16, 8, 256, 32768, 1), (16, 8, 256, 32768, 8), (16, 8, 128, 131072, 1),
                       (16, 8, 128, 32768, 8), (8, 8, 128, 32768, 8)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    sdpa = min(sdpa_us(q, k, v, scale, be, "read")[0] for be in (torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                                                                 torch.nn.attention.SDPBackend.CUDNN_ATTENTION))
    for lam in (0.5, 0.8):
        arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
        for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
            steps = {n: step_fn(m, q, prefix, scale)[0] for n, m in MODS.items()}
            times = {n: [] for n in steps}
            for _ in range(3):
                for n, st in steps.items():
                    times[n].append(bench_us(st, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, form=form,
                             sdpa_us=sdpa, times=times, **{f"{n}_us": x for n, x in med.items()},
                             gq2_vs_main=med["main"] / med["gq2"]))
            print(f"D{d} {hq}/{h} {s} b{b} λ{lam} {form:6}: sdpa {sdpa:7.1f} main {med['main']:7.1f} "
                  f"gq2 {med['gq2']:7.1f} x{med['main'] / med['gq2']:.3f} (vs sdpa {sdpa / med['gq2']:.2f})",
                  flush=True)
            Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
        del arrays, prefix, steps
    del q, k, v
    torch.cuda.empty_cache()
