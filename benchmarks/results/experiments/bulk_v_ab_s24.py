"""Session 24: the V tile of a full page record as one bulk copy (cp.async.bulk, the TMA engine, completing on a
per-warp mbarrier) instead of 16 cp.async a lane, with the pages' V rows stored in the kernel's shared-memory order
(16-byte chunk c of row r at c ^ (r % 8)), so that a plain byte copy lands them swizzled for ldmatrix; the last tile
of a row copies its valid rows with cp.async at the same places. Variant folders hold cuda.py and spark_walk.cu; a
folder whose name ends in "bulk" gets pages with swizzled V (built here from main's pages). The arithmetic is
unchanged, so outputs must be bit-equal to the first folder's build: checked on ragged cases (pages and arrays,
bf16 / fp16, D = 256 / 128 / 64, DK 13-128, 2-8 query heads a KV head) against the fp32 reference; then whole steps
(split kernel + Triton combine, CUDA graph, read flush, medians of three interleaved rounds), pages, with the best
SDPA backend of the same run.
Command: PYTHONPATH=. python benchmarks/results/experiments/bulk_v_ab_s24.py OUT.json NAME:FOLDER [NAME:FOLDER ...]
Run: one H200, 2026-11-30 07:51 UTC, torch 2.11.0+cu130, triton 3.6.0, `main:gpu/base bulk:gpu/v6` (main's kernel
files at bb3d104; v6 = them + bulk_v_s24.patch): bulk_v_ab_s24_h200.json; 28 checks bit-equal; 0.968-1.027x (λ = 0.5
at 128K·b1 0.987x, 32K·b8 1.009x; D = 256 1.027x), so not kept (BENCHMARKS.md "Session 24")."""
import dataclasses
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


def swizzled(prefix):
    """Pages with every record's V rows in the kernel's shared-memory order; arrays as they are."""
    if not isinstance(prefix, SparKPages):
        return prefix
    d, p = prefix.head_dim, prefix.pages
    n = 32 * d * 2
    v = p[..., :n].reshape(p.shape[0], p.shape[1], 32, d // 8, 16)
    r = torch.arange(32, device=p.device)[:, None]
    idx = torch.arange(d // 8, device=p.device)[None, :] ^ (r & 7)
    out = p.clone()
    out[..., :n] = v[:, :, r, idx].reshape(p.shape[0], p.shape[1], n)
    return dataclasses.replace(prefix, pages=out)


MODS = {a.split(":")[0]: load(*a.split(":")) for a in sys.argv[2:]}
BASE = next(iter(MODS))
QUICK = bool(int(os.environ.get("AB_QUICK", "0")))


def step_fn(name, q, prefix, scale, **kw):
    plan = MODS[name].SplitPlan(q, swizzled(prefix) if name.endswith("bulk") else prefix, scale, **kw)
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
            outs = {n: step_fn(n, q, prefix, d ** -0.5, **kw)() for n in MODS}
        except ValueError as e:  # a launch this case does not admit (e.g. 8 warps past the shared memory)
            print(f"check D{d} G{hq // h} DK{dk} {kw} {form}: skipped ({e})"[:200], flush=True)
            continue
        err = {n: ((o.float() - ref).norm() / ref.norm()).item() for n, o in outs.items()}
        same = {n: torch.equal(outs[BASE], o) for n, o in outs.items()}
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), launch=kw, form=form, rel_err=err,
                           bit_equal=same))
        print(f"check D{d} G{hq // h} DK{dk} {str(dtype)[6:]} {kw} {form}: {err} bit-equal {same}", flush=True)
        assert max(err.values()) < 1e-2 and all(same.values())
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
        steps = {n: step_fn(n, q, prefix, scale) for n in MODS}
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
