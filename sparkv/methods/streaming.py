"""StreamingLLM token eviction (Xiao et al., 2024; spec §4): attention sinks plus the most recent tokens.

The selection does not depend on the content of the cache, so it is the same for every KV head and every layer.
"""

from __future__ import annotations

import torch

from sparkv.methods.eviction import (
    TokenSelection,
    _check_budget_or_ratio,
    _check_int,
    _check_valid_mask,
    _ratio_keep,
    _select_by_priority,
)

__all__ = ["streaming_select"]


def streaming_select(
    keys: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    *,
    token_budget: int | None = None,
    token_ratio: float | None = None,
    sink_tokens: int = 4,
) -> TokenSelection:
    """Keep the first ``sink_tokens`` valid tokens of each row and the most recent ones.

    For a row with ``n`` valid tokens (left padding excluded) the number kept is

    - budget mode: ``k = min(token_budget, n)``;
    - ratio mode: ``k = max(int((1 - token_ratio) · n), min(sink_tokens + 1, n))`` (at least one recent token
      besides the sinks, so the last prompt token always survives);

    the kept tokens are the first ``min(sink_tokens, k)`` valid positions and the last ``k - sink_tokens`` ones.
    Sinks are counted from the first *valid* token, not from position 0, so left padding never takes a sink slot.

    Parameters
    ----------
    keys : Tensor ``[B, H, S, D]``
        Cached prompt keys; only the shape and device are read.
    valid_mask : Tensor ``[B, S]`` bool, optional
        False on left-padding tokens.
    token_budget : int, optional
        Tokens kept per (row, head), sinks included; must exceed ``sink_tokens``.
    token_ratio : float, optional
        Fraction in [0, 1) of each row's valid tokens to evict. Exactly one of budget and ratio is set.
    sink_tokens : int
        Attention sinks (4); 0 gives a plain recency window.

    Returns
    -------
    TokenSelection
        ``indices [B, H, N]`` (identical across heads), ``lengths [B] = k``.
    """
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H, S, D], got shape {tuple(keys.shape)}")
    _check_int("sink_tokens", sink_tokens, 0)
    _check_budget_or_ratio(token_budget, token_ratio, sink_tokens, "sink_tokens")
    B, H, S, _ = keys.shape
    if S < 1:
        raise ValueError("keys must hold at least one token (S >= 1)")
    device = keys.device
    key_valid = _check_valid_mask(valid_mask, B, S, device)
    n_valid = key_valid.sum(-1)
    if token_budget is not None:
        keep = n_valid.clamp(max=token_budget)
    else:
        keep = torch.maximum(_ratio_keep(n_valid, token_ratio), n_valid.clamp(max=sink_tokens + 1))

    # Priority: sinks first (+inf), then recency (the position itself), padding last (-inf).
    valid_rank = torch.cumsum(key_valid.long(), dim=-1) - 1  # rank of each valid token among the row's valid ones
    priority = torch.arange(S, device=device, dtype=torch.float32).expand(B, S).clone()
    priority = priority.masked_fill(key_valid & (valid_rank < sink_tokens), float("inf"))
    priority = priority.masked_fill(~key_valid, float("-inf"))
    return _select_by_priority(priority[:, None, :].expand(B, H, S), keep)
