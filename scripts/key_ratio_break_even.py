"""The smallest key ratio at which SparK's layout holds fewer key bytes than the dense keys, per dtype and head_dim.

Each token keeps ``T = D - floor(λD)`` values plus two D-bit bitmaps and a scale, and each (row, head) a float32
``u``: below the break-even the metadata outweighs the pruned channels (``compress_layer`` then warns). Counted with
the layout's own ``nbytes()`` on random keys (``mean`` recovery, one row and head of ``--tokens`` tokens).

    PYTHONPATH=. python scripts/key_ratio_break_even.py
"""

from __future__ import annotations

import argparse

import torch

from sparkv.kernels.select_pack.reference import select_pack_ref


def break_even(head_dim: int, dtype: torch.dtype, tokens: int) -> int:
    """Fewest pruned channels whose layout is smaller than the dense keys."""
    keys = torch.randn(1, 1, tokens, head_dim).to(dtype)
    stat = torch.rand(1, 1, head_dim) + 0.1
    dense = keys.numel() * keys.element_size()
    return next(n for n in range(1, head_dim) if select_pack_ref(keys, stat, head_dim - n).nbytes() < dense)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=512)
    args = p.parse_args()
    print("| dtype | head_dim | pruned channels at break-even | key ratio λ |\n|---|---|---|---|")
    for dtype in (torch.bfloat16, torch.float32):
        for d in (64, 128, 256):
            n = break_even(d, dtype, args.tokens)
            print(f"| {str(dtype).removeprefix('torch.')} | {d} | {n} | {n / d:.3f} |")


if __name__ == "__main__":
    main()
