"""Prepared in session 20, run in session 21 (H200, 2026-11-30 03:19 UTC, kv_mode3_ab_h200.json): kept rows with
DK = 4 mod 8 (DK = 20, 52, 100, 108 at D = 128; 12, 20, 28 at D = 64) read as 8-byte units from unpadded rows
(KV_MODE 3, kv_mode3_s20.patch) against main's 4-byte words in rows padded to an odd word count (KV_MODE 1). Static
SASS of the tile loop (compile_sm90.py --cuda, cap 200): DK = 52 2121 -> 1835 (arrays), 2237 -> 1844 (pages, and no
stack frame); DK = 100 3274 / 3405 -> 2860 / 2838 (and no 224-byte stack frame); D = 64 DK = 20 935 -> 915.
Measured: bit-equal everywhere; DK = 52 1.06-1.12x, DK = 100 1.21-1.30x, DK = 20 and D = 64 1.00-1.10x. Landed.
Needs the patch applied to the working tree and main's kernel files in a folder (`mkdir -p /tmp/base && for f in
cuda.py spark_walk.cu; do git show HEAD:sparkv/kernels/decode_attn/$f > /tmp/base/$f; done` before `git apply`).
First every case against the fp32 reference on ragged lengths and bit-equal to main's build, then whole steps
(kernel + Triton combine, bench_us graph, flush="read"), medians of 3 interleaved rounds, pages and arrays.
Command: PYTHONPATH=. python benchmarks/results/experiments/kv_mode3_ab_s20.py OUT.json /tmp/base"""
import importlib.util
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import make_shape  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKPages  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def load(name, folder):
    spec = importlib.util.spec_from_file_location(name, Path(folder) / "cuda.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


MODS = {"main": load("m_main", sys.argv[2]), "mode3": load("m_mode3", "sparkv/kernels/decode_attn")}


def step_fn(mod, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step, plan.defines["KV_MODE"]


checks = []
for hq, h, d, dk, dtype in ((32, 8, 128, 52, torch.bfloat16), (32, 8, 128, 100, torch.float16),
                            (32, 8, 128, 20, torch.bfloat16), (9, 3, 64, 20, torch.bfloat16),
                            (9, 3, 64, 12, torch.float16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 4000, d, dtype, seed=11)
    lens = torch.tensor([4000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        outs, modes = {}, {}
        for n, m in MODS.items():
            st, modes[n] = step_fn(m, q, prefix, d ** -0.5)
            outs[n] = st()
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = torch.equal(outs["main"], outs["mode3"])
        checks.append(dict(head_dim=d, kept=dk, dtype=str(dtype), form=form, rel_err=err, bit_equal=same, modes=modes))
        print(f"check D{d} DK{dk} {form}: modes {modes} {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and same and modes["mode3"] == 3
rows = []
for hq, h, d, s, b, dk in ((32, 8, 128, 131072, 1, 52), (32, 8, 128, 32768, 8, 52), (32, 8, 128, 131072, 1, 100),
                           (32, 8, 128, 32768, 1, 20), (9, 3, 64, 131072, 8, 20), (9, 3, 64, 131072, 1, 28)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    arrays = CompressedKV(select_pack_triton(k, stat, dk), v, lens)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        steps = {n: step_fn(m, q, prefix, scale)[0] for n, m in MODS.items()}
        times = {n: [] for n in steps}
        for _ in range(3):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(head_dim=d, context=s, batch=b, kept=dk, form=form, times=times,
                         **{f"{n}_us": x for n, x in med.items()}, mode3_vs_main=med["main"] / med["mode3"]))
        print(f"D{d} {s:>6} b{b} DK{dk} {form:6}: main {med['main']:7.1f} mode3 {med['mode3']:7.1f} "
              f"x{med['main'] / med['mode3']:.3f}", flush=True)
    del q, k, v, arrays, prefix, steps
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
