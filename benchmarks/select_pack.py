"""Cost of compressing one layer's keys into the SparK layout (Triton ``select_pack``) vs that layer's prefill.

    PYTHONPATH=. python benchmarks/select_pack.py            # -> benchmarks/results/select_pack_h200.json

Per row: keys ``[B, H, S, D]`` bf16 (Llama-3.1-8B layout: 8 KV heads, 32 query heads, D = 128; SmolLM2: 3 / 9,
D = 64), λ 0.5 and 0.8, recovery ``mean``. Columns: the kernel's median time; its effective bandwidth over the
dense key bytes (``B·H·S·D·2 / t``) and over all bytes it moves (keys read + layout written); the same layer's
causal prefill attention (torch SDPA flash, ``enable_gqa=True``) for scale. Each config is checked bit for bit
against ``select_pack_ref`` first (bitmaps and kept values exact, scale within one bf16 ulp).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DEVICE, bench_us, default_out, environment, fmt_ctx, markdown_table, write_json  # noqa: E402

from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.select_pack.fused import select_pack_triton  # noqa: E402
from sparkv.kernels.select_pack.reference import select_pack_ref  # noqa: E402

SHAPES = [
    # (model, q heads, kv heads, D, context, batch)
    ("llama-3.1-8b", 32, 8, 128, 8192, 1),
    ("llama-3.1-8b", 32, 8, 128, 32768, 1),
    ("llama-3.1-8b", 32, 8, 128, 32768, 8),
    ("llama-3.1-8b", 32, 8, 128, 131072, 1),
    ("smollm2", 9, 3, 64, 32768, 8),
]


def check(tri, ref) -> str | None:
    if not torch.equal(tri.kept_bits, ref.kept_bits):
        return "kept_bits differ"
    if not torch.equal(tri.sign_bits, ref.sign_bits):
        return "sign_bits differ"
    if not torch.equal(tri.kept_values, ref.kept_values):
        return "kept_values differ"
    if not torch.allclose(tri.scale.float(), ref.scale.float(), rtol=1e-2, atol=1e-6):
        return "scale differs"
    return None


def prefill_us(b, hq, h, s, d) -> float | None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(b, hq, s, d, device=DEVICE, dtype=torch.bfloat16)
    k = torch.randn(b, h, s, d, device=DEVICE, dtype=torch.bfloat16)
    v = torch.randn_like(k)

    def fn():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    try:
        fn()
    except RuntimeError:
        return None
    return bench_us(fn, warmup=1, rep=50, graph=False)


COLUMNS = [
    ("model", "model", ""), ("ctx", "context", ""), ("batch", "batch", ""), ("head_dim", "D", ""),
    ("key_ratio", "λ", ""), ("kept", "DK", ""), ("us", "select_pack µs", ".1f"),
    ("tbps_dense_keys", "TB/s over dense keys", ".2f"), ("tbps_moved", "TB/s moved", ".2f"),
    ("prefill_us", "prefill attention µs", ".0f"), ("fraction_of_prefill", "share of prefill", ".4f"),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=default_out("select_pack"))
    args = p.parse_args()
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("select_pack.py needs a CUDA device (or TRITON_INTERPRET=1 for a dry run at tiny shapes)")
    shapes = SHAPES if DEVICE == "cuda" else [("tiny", 4, 2, 64, 100, 1)]
    t0 = time.time()
    env = environment()
    rows = []
    for model, hq, h, d, s, b in tqdm(shapes, desc="shapes"):
        torch.cuda.empty_cache()
        gen = torch.Generator(device=DEVICE).manual_seed(s + b)
        keys = torch.randn(b, h, s, d, device=DEVICE, dtype=torch.bfloat16, generator=gen)
        stat = torch.rand(b, h, d, device=DEVICE, generator=gen) + 0.05
        pre = prefill_us(b, hq, h, s, d)
        for lam in (0.5, 0.8):
            dk = kept_channels(d, lam)
            row = dict(model=model, head_dim=d, q_heads=hq, kv_heads=h, context=s, ctx=fmt_ctx(s), batch=b,
                       key_ratio=lam, kept=dk, prefill_us=pre)
            out = select_pack_triton(keys, stat, dk)
            problem = check(out, select_pack_ref(keys, stat, dk))
            if problem:
                row["error"] = problem
                tqdm.write(f"FAILED check: {row}")
                rows.append(row)
                continue
            us = bench_us(lambda keys=keys, stat=stat, dk=dk: select_pack_triton(keys, stat, dk))
            moved = keys.nbytes + out.nbytes() + stat.nbytes
            row.update(us=us, bytes_dense_keys=keys.nbytes, bytes_moved=moved,
                       tbps_dense_keys=keys.nbytes / us / 1e6, tbps_moved=moved / us / 1e6,
                       fraction_of_prefill=(us / pre) if pre else None)
            rows.append(row)
            tqdm.write(str(row))
        del keys
    command = "PYTHONPATH=. python benchmarks/select_pack.py " + " ".join(sys.argv[1:])
    write_json(args.out, {**env, "command": command.strip(),
                          "versions": {k: env.get(k) for k in ("torch", "triton", "transformers", "cuda")},
                          "rows": rows})
    print()
    print(f"{env.get('device')} · {env['date']} · torch {env['torch']} · triton {env['triton']}")
    print(markdown_table(rows, COLUMNS))
    print(f"\n({time.time() - t0:.0f} s; JSON: {args.out})")


if __name__ == "__main__":
    main()
