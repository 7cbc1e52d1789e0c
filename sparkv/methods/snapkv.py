"""SnapKV token eviction (Li et al., 2024; spec §4), as used by the SparK paper's ``snap_spark`` press.

The last ``W`` prompt queries (the observation window) vote for the earlier tokens through their attention
weights; the pooled votes rank the non-window tokens, the window itself is always kept.

Differences from the authors' / kvpress code, all deliberate
-------------------------------------------------------------
- Scores are computed entirely in float32 (the reference code casts the softmax back to the model dtype).
- Left padding is masked out of the softmax and padding tokens are never kept before valid ones; window queries
  that are padding (rows shorter than the window) do not vote.
- Ties break towards the lower position (``torch.topk`` gives no guarantee).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sparkv.methods.eviction import (
    TokenSelection,
    _check_budget_or_ratio,
    _check_int,
    _check_valid_mask,
    _ratio_keep,
    _select_by_priority,
)
from sparkv.methods.shapes import check_window_and_keys

__all__ = ["snapkv_scores", "snapkv_select"]

# Upper bound on the float32 attention block materialised at once (per chunk of KV heads).
_CHUNK_BYTES = 256 * 2**20


def _check_qk(window_queries: torch.Tensor, keys: torch.Tensor) -> tuple[int, int, int, int, int, int]:
    B, HQ, W, D, H, S = check_window_and_keys(window_queries, keys)
    if S < 1:
        raise ValueError("keys must hold at least one token (S >= 1)")
    return B, HQ, W, D, H, S


def _check_kernel(kernel_size: object) -> None:
    _check_int("kernel_size", kernel_size, 1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")


def snapkv_scores(
    window_queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float | None,
    valid_mask: torch.Tensor | None = None,
    kernel_size: int = 5,
) -> torch.Tensor:
    """SnapKV importance of every non-window token, per KV head.

    With ``q_i`` the ``W`` window queries (positions ``S - W + i``), ``k_t`` the keys and ``m_t`` the key mask:

    ``p[i, t] = softmax_t( scaling · q_i·k_t )`` over the keys ``t <= S - W + i`` with ``m_t`` (float32),

    ``a[t] = mean over valid window queries i of p[i, t]`` for ``t < S - W``,

    ``s = avg_pool1d(a, kernel_size, stride 1, padding kernel_size // 2)`` (zero padding counted, as
    ``F.avg_pool1d``), then averaged over the ``G`` query heads of each KV head. The mean over ``G`` and the pooling
    are both linear, so their order does not matter.

    Parameters
    ----------
    window_queries : Tensor ``[B, HQ, W, D]``
        The last ``W`` prompt queries exactly as attention sees them (post-RoPE, post q_norm). ``HQ = H·G``; query
        head ``h·G + g`` belongs to KV head ``h`` (transformers' ``repeat_kv`` order).
    keys : Tensor ``[B, H, S, D]``
        The cached prompt keys (post-RoPE), ``S >= W``; the last ``W`` keys are the window's own.
    scaling : float or None
        Attention logit scale (``module.scaling``); None means ``D ** -0.5``.
    valid_mask : Tensor ``[B, S]`` bool, optional
        False on left-padding tokens, which get no attention. Window queries at padding positions do not vote (a row
        whose window is all padding scores 0 everywhere).
    kernel_size : int
        Odd pooling kernel (5).

    Returns
    -------
    Tensor ``[B, H, S - W]`` float32
        Scores of the non-window tokens. Padding tokens keep whatever the pooling gives them (their own attention is
        0, their neighbours' is not); callers must mask them, as :func:`snapkv_select` does. For a left-padded row
        the scores of its valid tokens equal those of the same row without padding.
    """
    B, HQ, W, D, H, S = _check_qk(window_queries, keys)
    _check_kernel(kernel_size)
    if W > S:
        raise ValueError(f"the window ({W} queries) cannot be longer than the keys (S = {S})")
    G = HQ // H
    L = S - W
    device = keys.device
    if scaling is None:
        scaling = D**-0.5
    key_valid = _check_valid_mask(valid_mask, B, S, device)
    if L == 0:
        return torch.zeros(B, H, 0, dtype=torch.float32, device=device)

    query_valid = key_valid[:, L:]  # [B, W]: the window queries sit at positions L .. S-1
    pos = torch.arange(S, device=device)
    causal = pos[None, :] <= (L + torch.arange(W, device=device))[:, None]  # [W, S]
    allowed = key_valid[:, None, :] & causal[None]  # [B, W, S]
    not_allowed = ~allowed[:, None, None]  # [B, 1, 1, W, S]
    q_weight = query_valid.float()[:, None, None, :, None]  # [B, 1, 1, W, 1]
    n_queries = query_valid.sum(-1).clamp_min(1).float()[:, None, None, None]  # [B, 1, 1, 1]
    fill = torch.finfo(torch.float32).min  # finite: fully masked (padding) queries give no NaN

    per_head = B * G * W * S * 4
    chunk = max(1, min(H, _CHUNK_BYTES // max(per_head, 1)))
    out = []
    for h0 in range(0, H, chunk):
        hc = min(chunk, H - h0)
        q = window_queries[:, h0 * G : (h0 + hc) * G].float().reshape(B, hc, G, W, D)
        k = keys[:, h0 : h0 + hc].float()  # [B, hc, S, D]
        logits = torch.matmul(q, k[:, :, None].transpose(-1, -2)) * scaling  # [B, hc, G, W, S]
        probs = torch.softmax(logits.masked_fill(not_allowed, fill), dim=-1)
        votes = (probs[..., :L] * q_weight).sum(dim=3) / n_queries  # [B, hc, G, L]
        out.append(votes.mean(dim=2))  # [B, hc, L]
    scores = torch.cat(out, dim=1)
    return F.avg_pool1d(scores, kernel_size=kernel_size, stride=1, padding=kernel_size // 2)


def _snapkv_select_keep(
    window_queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float | None,
    key_valid: torch.Tensor,
    keep: torch.Tensor,
    kernel_size: int,
) -> TokenSelection:
    """SnapKV selection with an explicit number of kept tokens per row.

    ``window_queries`` holds exactly the ``W`` window queries; ``keep [B]`` must satisfy
    ``min(W, n_b) <= keep[b] <= n_b`` with ``n_b`` the row's valid tokens.
    """
    B, _, W, _ = window_queries.shape
    S = keys.shape[2]
    n_valid = key_valid.sum(-1)
    padding = ~key_valid[:, None, :]
    if bool((keep >= n_valid).all()):
        # Every row keeps all of its valid tokens: no scoring needed.
        priority = torch.zeros(B, keys.shape[1], S, dtype=torch.float32, device=keys.device)
    else:
        scores = snapkv_scores(window_queries, keys, scaling, key_valid, kernel_size)
        window_prio = torch.full((*scores.shape[:2], W), float("inf"), dtype=torch.float32, device=keys.device)
        priority = torch.cat([scores, window_prio], dim=-1)
    priority = priority.masked_fill(padding, float("-inf"))
    return _select_by_priority(priority, keep)


def snapkv_select(
    window_queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float | None,
    valid_mask: torch.Tensor | None = None,
    *,
    token_budget: int | None = None,
    token_ratio: float | None = None,
    window: int = 64,
    kernel_size: int = 5,
) -> TokenSelection:
    """SnapKV: keep the observation window plus the best-scored earlier tokens, per (batch row, KV head).

    For a row with ``n`` valid tokens the number kept is

    - budget mode: ``k = min(token_budget, n)`` (the budget counts the window);
    - ratio mode: ``k = max(int((1 - token_ratio) · n), min(W, n))``;

    if ``k >= n`` every valid token is kept. Otherwise the last ``W = min(window, S)`` tokens are kept and the
    ``k - W`` valid non-window tokens with the highest :func:`snapkv_scores` are added (ties: lower position).
    Padding tokens are never kept.

    Parameters
    ----------
    window_queries : Tensor ``[B, HQ, W', D]``
        The last ``W' >= min(window, S)`` prompt queries (post-RoPE, post q_norm); the last ``min(window, S)`` are
        used.
    keys : Tensor ``[B, H, S, D]``
        Cached prompt keys (post-RoPE).
    scaling : float or None
        Attention logit scale; None means ``D ** -0.5``.
    valid_mask : Tensor ``[B, S]`` bool, optional
        False on left-padding tokens.
    token_budget : int, optional
        Tokens kept per (row, head), window included; must exceed ``window``.
    token_ratio : float, optional
        Fraction in [0, 1) of each row's valid tokens to evict. Exactly one of budget and ratio is set.
    window : int
        Observation window (64).
    kernel_size : int
        Odd pooling kernel (5).

    Returns
    -------
    TokenSelection
        ``indices [B, H, N]`` with ``N = max_b k_b`` and ``lengths [B] = k``.
    """
    B, HQ, Wq, D, H, S = _check_qk(window_queries, keys)
    _check_int("window", window, 1)
    _check_kernel(kernel_size)
    _check_budget_or_ratio(token_budget, token_ratio, window, "window")
    W = min(window, S)
    if Wq < W:
        raise ValueError(f"window_queries must hold at least min(window, S) = {W} queries, got {Wq}")
    key_valid = _check_valid_mask(valid_mask, B, S, keys.device)
    n_valid = key_valid.sum(-1)
    if token_budget is not None:
        keep = n_valid.clamp(max=token_budget)
    else:
        keep = torch.maximum(_ratio_keep(n_valid, token_ratio), n_valid.clamp(max=W))
    return _snapkv_select_keep(window_queries[:, :, Wq - W :], keys, scaling, key_valid, keep, kernel_size)
