"""Shape checks shared by the methods that read observation-window queries."""

from __future__ import annotations

import torch


def check_window_and_keys(window_queries: torch.Tensor, keys: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    """Validate ``window_queries [B, HQ, W, D]`` against ``keys [B, H, S, D]``; return ``(B, HQ, W, D, H, S)``."""
    if window_queries.dim() != 4:
        raise ValueError(f"window_queries must be [B, HQ, W, D], got shape {tuple(window_queries.shape)}")
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H, S, D], got shape {tuple(keys.shape)}")
    b, hq, w, d = window_queries.shape
    bk, h, s, dk = keys.shape
    if bk != b or dk != d:
        raise ValueError(
            f"window_queries [B, HQ, W, D] = {tuple(window_queries.shape)} and keys [B, H, S, D] = "
            f"{tuple(keys.shape)} must agree on B and D"
        )
    if h < 1 or hq % h != 0:
        raise ValueError(f"the number of query heads HQ ({hq}) must be a positive multiple of the KV heads H ({h})")
    return b, hq, w, d, h, s
