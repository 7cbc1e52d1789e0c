"""ThinK: query-driven *structured* key-channel pruning (Xu et al., 2024), the baseline of spec §5.

For every (layer, batch row, KV head) one set of key channels is chosen from the observation window and applied
to every cached token: the ``floor(λ·D)`` channels with the lowest score are dropped, the other
``DK = D - floor(λ·D)`` are stored (see :func:`sparkv.config.kept_channels`).

Limitations
-----------
- No recovery: a pruned channel contributes exactly 0 to every attention logit ``q·k``; nothing of the dropped
  entries is kept or estimated (SparK, spec §3, recovers them from a per-token scale and signs).
- Structured: the kept channels are shared by all tokens of a head, so a channel that is small on average but large
  for a few tokens is lost for those tokens. This is why ThinK degrades much faster than SparK at high λ (spec §8:
  LongBench 28.20 at λ=0.5 and 16.97 at λ=0.8 vs 32.04 and 31.16 for SparK, SnapKV budget 128).
- Keys only: values are stored dense. The memory saved is ``floor(λ·D)`` key channels per token, minus one shared
  index list of ``DK`` channels per (layer, row, head); the saving only exists if the cache really stores ``DK``
  channels (kvpress' ThinKPress zeroes the channels in a dense tensor and saves nothing).
- The selection is computed once, at prefill, from the prompt's window, and prunes the prompt only: tokens generated
  later go to the dense decode tail, as with every press (kvpress prunes the prompt only as well).
"""

from __future__ import annotations

import torch

from sparkv.methods.eviction import _check_int, _check_valid_mask
from sparkv.methods.shapes import check_window_and_keys

__all__ = ["think_channel_scores", "think_select_channels"]


def think_channel_scores(
    window_queries: torch.Tensor,
    keys: torch.Tensor,
    valid_mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    *,
    window: int | None = None,
) -> torch.Tensor:
    """ThinK channel scores per (batch row, KV head): query energy times key energy, float32.

    ``score[b, h, j] = ( mean_{g < G} mean_{w < W} q[b, h·G + g, w, j]^2 ) · ( mean_{t valid} K[b, h, t, j]^2 )``

    Parameters
    ----------
    window_queries : Tensor ``[B, HQ, W', D]``
        The last prompt queries exactly as attention sees them (post-RoPE, post q_norm); ``HQ = H·G``, query head
        ``h·G + g`` belongs to KV head ``h``. With ``window`` set only the last ``window`` are used.
    keys : Tensor ``[B, H, S, D]``
        Cached keys: the full prompt (use ``valid_mask``) or the survivors of an eviction, valid tokens first
        (use ``lengths``, e.g. ``TokenSelection.lengths`` after ``gather_tokens``).
    valid_mask : Tensor ``[B, S]`` bool, optional
        False on left-padding tokens. The keys are then the prompt, so the window queries are the last ``W`` of its
        positions: window queries at padding positions (``valid_mask[:, -W:]`` False) are left out of the query
        mean too.
    lengths : LongTensor ``[B]``, optional
        Only ``keys[b, :, :lengths[b]]`` are valid. At most one of ``valid_mask`` and ``lengths``; with neither,
        every token and query is valid.
    window : int, optional
        Use only the last ``window`` queries (default: all ``W'``).

    Returns
    -------
    Tensor ``[B, H, D]`` float32
        Non-negative scores; a row without valid tokens (or queries) scores 0.
    """
    B, HQ, Wq, D, H, S = check_window_and_keys(window_queries, keys)
    if valid_mask is not None and lengths is not None:
        raise ValueError("give at most one of valid_mask and lengths")
    if window is not None:
        _check_int("window", window, 1)
        if window > Wq:
            raise ValueError(f"window ({window}) exceeds the number of window_queries ({Wq})")
        window_queries = window_queries[:, :, Wq - window :]
        Wq = window
    G = HQ // H
    device = keys.device

    if lengths is not None:
        if lengths.dim() != 1 or lengths.shape[0] != B:
            raise ValueError(f"lengths must be a [B] = [{B}] tensor, got shape {tuple(lengths.shape)}")
        lengths = lengths.to(device)
        if bool(((lengths < 0) | (lengths > S)).any()):
            raise ValueError(f"lengths must lie in [0, S = {S}], got {lengths.tolist()}")
        key_valid = torch.arange(S, device=device)[None, :] < lengths[:, None]
        query_valid = torch.ones(B, Wq, dtype=torch.bool, device=device)
    else:
        key_valid = _check_valid_mask(valid_mask, B, S, device)
        if valid_mask is not None and S >= Wq:
            query_valid = key_valid[:, S - Wq :]
        else:
            query_valid = torch.ones(B, Wq, dtype=torch.bool, device=device)

    q2 = window_queries.float().square().reshape(B, H, G, Wq, D)
    q_w = query_valid.to(device=q2.device, dtype=torch.float32)[:, None, None, :, None]
    q_n = query_valid.sum(-1).clamp_min(1).to(device=q2.device, dtype=torch.float32)[:, None, None]
    q_term = (q2 * q_w).sum(dim=3).mean(dim=2) / q_n  # [B, H, D]

    k_w = key_valid.float()[:, None, :, None]
    k_n = key_valid.sum(-1).clamp_min(1).float()[:, None, None]
    k_term = (keys.float().square() * k_w).sum(dim=2) / k_n  # [B, H, D]
    return q_term.to(device) * k_term


def think_select_channels(scores: torch.Tensor, kept: int) -> torch.Tensor:
    """Channels ThinK keeps: the ``kept`` highest-scoring channels per (b, h), in ascending channel order.

    Prunes the ``D - kept`` lowest channels (``kept = D - floor(λ·D)``, :func:`sparkv.config.kept_channels`).
    Ties break deterministically: among equal scores the lower channel index is kept first.

    Parameters
    ----------
    scores : Tensor ``[B, H, D]``
        From :func:`think_channel_scores`. No NaN.
    kept : int
        ``DK`` in ``[1, D]``.

    Returns
    -------
    LongTensor ``[B, H, kept]``
        Kept channel indices, ascending.

    Limitations
    -----------
    Structured and without recovery: the same ``kept`` channels serve every token of the head, and the pruned
    channels contribute exactly 0 to every logit (see the module docstring). Memory is only saved if the cache
    stores the ``kept`` channels plus this index list instead of zeroing channels of a dense tensor.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be [B, H, D], got shape {tuple(scores.shape)}")
    D = scores.shape[-1]
    if not isinstance(kept, int) or isinstance(kept, bool) or not 1 <= kept <= D:
        raise ValueError(f"kept must be an integer in [1, D = {D}], got {kept!r}")
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices
    return torch.sort(order[..., :kept], dim=-1).values
