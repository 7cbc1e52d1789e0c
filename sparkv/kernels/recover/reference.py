"""Materialise recovered keys K̂ from a compressed layout — the test oracle and the PyTorch attention's block step.

Never used on a whole cache outside tests: attention calls :func:`recover_block_ref` one block of tokens at a time.
"""

from __future__ import annotations

import torch

from sparkv.cache.layout import DenseKeys, Keys, SparKKeys, ThinKKeys, unpack_bits
from sparkv.methods.spark import sample_saliency


def recover_block_ref(keys: Keys, start: int, end: int) -> torch.Tensor:
    """K̂ for tokens ``start .. end-1``: ``[B, H, end-start, D]`` float32 (spec §3)."""
    if isinstance(keys, DenseKeys):
        return keys.keys[:, :, start:end].float()
    if isinstance(keys, ThinKKeys):
        vals = keys.kept_values[:, :, start:end].float()
        b, h, s, _ = vals.shape
        out = vals.new_zeros(b, h, s, keys.head_dim)
        idx = keys.channel_idx.long().unsqueeze(2).expand(b, h, s, keys.kept)
        return out.scatter_(-1, idx, vals)
    if not isinstance(keys, SparKKeys):
        raise TypeError(f"unknown key layout {type(keys).__name__}")
    d = keys.head_dim
    vals = keys.kept_values[:, :, start:end].float()
    kept = unpack_bits(keys.kept_bits[:, :, start:end], d)
    out = vals.new_zeros(kept.shape)
    out[kept] = vals.reshape(-1)
    if keys.recovery == "zero":
        return out
    sign = torch.where(unpack_bits(keys.sign_bits[:, :, start:end], d), 1.0, -1.0)
    if keys.recovery == "constant":
        magnitude = torch.full_like(out, keys.constant)
    elif keys.recovery in ("mean", "mean_linear"):
        magnitude = keys.scale[:, :, start:end].float().unsqueeze(-1) * keys.u.unsqueeze(-2)
    else:
        spread = keys.spread[:, :, start:end] if keys.spread is not None else None
        drawn = sample_saliency(keys.recovery, keys.scale[:, :, start:end], spread, d, keys.seed, token_offset=start)
        magnitude = drawn.sqrt() * keys.u.unsqueeze(-2)
    return torch.where(kept, out, sign * magnitude)


def recover_ref(keys: Keys) -> torch.Tensor:
    """K̂ for every token, ``[B, H, S, D]`` float32 (tests only)."""
    return recover_block_ref(keys, 0, keys.num_tokens)
