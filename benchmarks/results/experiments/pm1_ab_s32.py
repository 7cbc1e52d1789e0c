"""Session 32 probe: the recovery's B operand as +-1 on every channel (PM1, pm1_s32.patch), which needs every kept
value stored as K - r u s (s: its channel's stored sign bit as +-1), so that the recovery term over all channels adds
back exactly what the kept values lack. One rotation and one LOP3 a register instead of a bit-select, a rotation and a
mask: 32 SASS instructions fewer a 32-token tile at DK = 64 (1835 against 1867; 1361 against 1391 at DK = 26, NVRTC
13.5.37 on the CPU machine, `sass_mix_s30.py`). The probe's pages hold K - r u s (built here from the arrays); the
library's layout is unchanged. Folders: `tree` (3fd8ac9's kernel files), `pm1` (tree + pm1_s32.patch), `pm1h1` (pm1 +
spread_h1_s30.patch: the recovery k-steps over the walk's first half, 1.006x / 0.998x on session 30's tree).
Checks: every folder against the fp32 reference of the original keys (pages, ragged rows); then whole steps (split
kernel + Triton combine, CUDA graph, read flush), five interleaved rounds.
Set-up (CPU): mkdir -p gpu/s32/tree; cp sparkv/kernels/decode_attn/{cuda.py,spark_walk.cu} gpu/s32/tree/;
  cp -r gpu/s32/tree gpu/s32/pm1 && (cd gpu/s32/pm1 && patch -p4 < ../../../benchmarks/results/experiments/pm1_s32.patch)
  cp -r gpu/s32/pm1 gpu/s32/pm1h1 && (cd gpu/s32/pm1h1 && patch -p4 < ../../../benchmarks/results/experiments/spread_h1_s30.patch)
Command (device): PYTHONPATH=. python benchmarks/results/experiments/pm1_ab_s32.py OUT.json
  tree:gpu/s32/tree pm1:gpu/s32/pm1 pm1h1:gpu/s32/pm1h1
Result (pm1_ab_s32_h200.json, H200, 2026-11-30 18:53 UTC, torch 2.11.0+cu130, triton 3.6.0; 4 checks, rel err 1.1e-3 to
2.6e-3 against the tree's 1.1e-3 to 2.3e-3): pm1 1.003x (128K·b1) and 0.992x (32K·b8) at λ = 0.5, 1.001-1.002x at
λ = 0.8, 1.001x SmolLM2 128K·b8 λ = 0.5; pm1h1 0.975x / 0.967x at λ = 0.5. Not kept: 32 instructions fewer a tile
buy nothing measurable, and K - r u s would cost the pages their exact kept values. BENCHMARKS.md "Session 32" item 4.
"""
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path("benchmarks").resolve()))
from common import bench_us, environment  # noqa: E402
from decode_attention import best_sdpa_us, make_shape  # noqa: E402
from folder_ab import load_folders, whole_step  # noqa: E402

from sparkv.cache.layout import CompressedKV, SparKKeys, SparKPages, unpack_bits  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402

CHECKS = [(32, 8, 128, 64, torch.bfloat16), (32, 8, 128, 26, torch.float16), (9, 3, 64, 32, torch.bfloat16),
          (16, 8, 128, 40, torch.bfloat16)]
CELLS = [(32, 8, 128, 131072, 1, (0.5, 0.8)), (32, 8, 128, 32768, 8, (0.5, 0.8)), (9, 3, 64, 131072, 8, (0.5,))]


def minus_recovery(keys: SparKKeys) -> SparKKeys:
    """The same keys with every kept value K replaced by K - r u s, rounded to the values' dtype."""
    d, dk = keys.head_dim, keys.kept
    kept = unpack_bits(keys.kept_bits, d)
    idx = torch.sort((~kept).to(torch.int8), dim=-1, stable=True).indices[..., :dk]  # kept channels, ascending
    del kept
    s = torch.gather(unpack_bits(keys.sign_bits, d), -1, idx).float() * 2 - 1
    u = torch.gather(keys.u[:, :, None, :].expand(*idx.shape[:3], d), -1, idx)
    new = keys.kept_values.float() - keys.scale.float()[..., None] * u * s
    return dataclasses.replace(keys, kept_values=new.to(keys.kept_values.dtype))


def pages_pair(k, v, stat, lens, dk):
    keys = select_pack_triton(k, stat, dk)
    arrays = CompressedKV(keys, v, lens)
    return arrays, SparKPages.from_compressed(arrays), SparKPages.from_compressed(CompressedKV(minus_recovery(keys), v,
                                                                                              lens))


def main(argv):
    out, mods = Path(argv[0]), load_folders(argv[1:])
    base = next(iter(mods))
    checks = []
    for hq, h, d, dk, dtype in CHECKS:
        q, k, v, stat, _ = make_shape(3, hq, h, 3000, d, dtype, seed=dk + hq)
        lens = torch.tensor([3000, 1237, 33], dtype=torch.int32, device=q.device)
        arrays, plain, minus = pages_pair(k, v, stat, lens, dk)
        ref = decode_attn_ref(q.float(), arrays, None, None, d ** -0.5)
        err = {}
        for n, m in mods.items():
            o = whole_step(m, q, plain if n == base else minus, d ** -0.5)()
            err[n] = ((o.float() - ref).norm() / ref.norm()).item()
        checks.append(dict(head_dim=d, group=hq // h, kept=dk, dtype=str(dtype), rel_err=err))
        print(f"check D{d} G{hq // h} DK{dk} {dtype}: {err}", flush=True)
        if not all(e < 1e-2 for e in err.values()):
            raise SystemExit("a folder fails the fp32 reference")
    record = dict(environment(), checks=checks)
    rows = []
    for hq, h, d, s, b, lams in CELLS:
        q, k, v, stat, lens = make_shape(b, hq, h, s, d, torch.bfloat16, seed=s + b + d)
        sdpa = best_sdpa_us(q, k, v, d ** -0.5)
        for lam in lams:
            _, plain, minus = pages_pair(k, v, stat, lens, kept_channels(d, lam))
            steps = {n: whole_step(m, q, plain if n == base else minus, d ** -0.5) for n, m in mods.items()}
            times = {n: [] for n in steps}
            for st in steps.values():
                st()
            for _ in range(5):
                for n, st in steps.items():
                    times[n].append(bench_us(st, flush="read"))
            med = {n: statistics.median(t) for n, t in times.items()}
            rows.append(dict(q_heads=hq, kv_heads=h, head_dim=d, context=s, batch=b, key_ratio=lam, sdpa_us=sdpa,
                             times=times, **{f"{n}_us": x for n, x in med.items()},
                             speedup_vs_base={n: med[base] / x for n, x in med.items()}))
            print(f"D{d} {hq}/{h} {s} b{b} λ{lam}: sdpa {sdpa:7.1f} " + " ".join(
                f"{n} {x:7.1f} (x{med[base] / x:.3f}, sdpa x{sdpa / x:.3f})" for n, x in med.items()), flush=True)
            out.write_text(json.dumps(dict(record, rows=rows), indent=1))
            del plain, minus, steps
        del q, k, v
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main(sys.argv[1:])
