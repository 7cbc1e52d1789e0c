"""Session 20 experiment: kept rows of an odd number of words (KV_MODE 1 with DK = 2 mod 4: DK = 26, 90 at D = 128;
26 at D = 64) copied as 16-byte chunks instead of 4-byte words (KV_CHUNK16=1, kv_chunk16_s20.patch): the same
shared-memory layout with a quarter of the copies. First every variant against the fp32 reference on ragged lengths
(partial last tiles), both layouts, bf16 and fp16; then whole steps (kernel + Triton combine, bench_us graph,
flush="read"), medians of 3 interleaved rounds, default launch of 675558f, on pages and arrays.
Command: PYTHONPATH=. python benchmarks/results/experiments/kv_chunk16_ab_s20.py OUT.json"""
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
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.fused import combine_partials  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402


def load(name, chunk16):
    spec = importlib.util.spec_from_file_location(name, Path("sparkv/kernels/decode_attn/cuda.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    orig = mod.defines
    mod.defines = lambda *a, **k: {**orig(*a, **k), "KV_CHUNK16": chunk16}
    return mod


MODS = {"words": load("m_words", 0), "chunk16": load("m_chunk16", 1)}


def step_fn(mod, q, prefix, scale):
    plan = mod.SplitPlan(q, prefix, scale)
    o, lse = plan.partials()

    def step():
        plan.launch(o, lse)
        return combine_partials(o, lse, q)
    return step


# correctness: ragged lengths, partial tiles
checks = []
for hq, h, d, lam, dtype in ((32, 8, 128, 0.8, torch.bfloat16), (32, 8, 128, 0.3, torch.float16),
                             (9, 3, 64, 0.6, torch.bfloat16)):
    q, k, v, stat, _ = make_shape(3, hq, h, 4000, d, dtype, seed=7)
    lens = torch.tensor([4000, 1237, 33], dtype=torch.int32, device="cuda")
    arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
    ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        outs = {n: step_fn(m, q, prefix, d ** -0.5)() for n, m in MODS.items()}
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = torch.equal(outs["words"], outs["chunk16"])
        checks.append(dict(head_dim=d, kept=kept_channels(d, lam), dtype=str(dtype), form=form, rel_err=err,
                           bit_equal=same))
        print(f"check D{d} DK{kept_channels(d, lam)} {form}: {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and same
rows = []
for hq, h, d, s, b, lam in ((32, 8, 128, 131072, 1, 0.8), (32, 8, 128, 32768, 8, 0.8), (32, 8, 128, 131072, 1, 0.3),
                            (32, 8, 128, 32768, 1, 0.8), (9, 3, 64, 131072, 8, 0.6)):
    q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
    scale = d ** -0.5
    arrays = CompressedKV(select_pack_triton(k, stat, kept_channels(d, lam)), v, lens)
    for form, prefix in (("pages", SparKPages.from_compressed(arrays)), ("arrays", arrays)):
        steps = {n: step_fn(m, q, prefix, scale) for n, m in MODS.items()}
        times = {n: [] for n in steps}
        for _ in range(3):
            for n, st in steps.items():
                times[n].append(bench_us(st, flush="read"))
        med = {n: statistics.median(t) for n, t in times.items()}
        rows.append(dict(head_dim=d, context=s, batch=b, key_ratio=lam, kept=kept_channels(d, lam), form=form,
                         times=times, **{f"{n}_us": x for n, x in med.items()},
                         chunk16_vs_words=med["words"] / med["chunk16"]))
        print(f"D{d} {s:>6} b{b} λ{lam} {form:6}: words {med['words']:7.1f} chunk16 {med['chunk16']:7.1f} "
              f"x{med['words'] / med['chunk16']:.3f}", flush=True)
    del q, k, v, arrays, prefix, steps
    torch.cuda.empty_cache()
Path(sys.argv[1]).write_text(json.dumps(dict(environment(), checks=checks, rows=rows), indent=1))
