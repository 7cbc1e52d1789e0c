"""CPU cost of one decode step of the PyTorch attention path (the path evaluations take on a CPU-only machine).

    PYTHONPATH=. python benchmarks/cpu_decode.py        # SmolLM2 heads (9 / 3, D = 64), 4096 prompt tokens, 1 thread

Times ``decode_attn_ref`` for one new token over a SparK prefix (λ 0.5 / 0.8, recoveries mean and zero) and over
dense keys (the full cache), fp32, median of 50 calls after 5 warm-ups, one thread.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import wall_clock_us  # noqa: E402

from sparkv.cache.layout import CompressedKV, DenseKeys  # noqa: E402
from sparkv.config import kept_channels  # noqa: E402
from sparkv.kernels.decode_attn.reference import decode_attn_ref  # noqa: E402
from sparkv.kernels.select_pack import select_pack_ref  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--group", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args()
    for name in ("tokens", "kv_heads", "group", "head_dim"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    b, h, s, d = 1, args.kv_heads, args.tokens, args.head_dim
    keys, values = torch.randn(b, h, s, d), torch.randn(b, h, s, d)
    stat = torch.rand(b, h, d) + 0.1
    lengths = torch.tensor([s], dtype=torch.int32)
    query = torch.randn(b, h * args.group, 1, d)
    dense = CompressedKV(DenseKeys(keys), values, lengths)
    print(f"torch {torch.__version__}, 1 thread, {s} tokens, {h} KV heads x {args.group}, D = {d}")
    dense_ms = wall_clock_us(lambda: decode_attn_ref(query, dense, None, None, d ** -0.5)) / 1e3
    print(f"| prefix | ms per decode step |\n|---|---|\n| dense | {dense_ms:.2f} |")
    for lam in (0.5, 0.8):
        for recovery in ("mean", "zero"):
            packed = select_pack_ref(keys, stat, kept_channels(d, lam), recovery=recovery)
            prefix = CompressedKV(packed, values, lengths)
            ms = wall_clock_us(lambda: decode_attn_ref(query, prefix, None, None, d ** -0.5)) / 1e3
            print(f"| SparK λ={lam} {recovery} | {ms:.2f} |")


if __name__ == "__main__":
    main()
