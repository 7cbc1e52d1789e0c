"""Token eviction: the common result type and the dispatcher over SnapKV, PyramidKV and StreamingLLM (spec §4).

Every eviction method answers the same question for one layer: which cached prompt tokens survive, for every
(batch row, KV head). The answer is a :class:`TokenSelection`. Eviction runs before channel pruning; the
channel-pruning methods only ever see the survivors.

Conventions (docs/DESIGN.md)
----------------------------
- ``valid_mask [B, S] bool`` is False on left-padding tokens; ``None`` means every token is valid.
- A selection puts each row's valid kept tokens first, in ascending position order, and reports their number in
  ``lengths [B]`` (the same for every head of a row). Entries at index ``>= lengths[b]`` are padding: they are
  distinct positions that were *not* kept (the lowest such positions, ascending), so the selection can be used
  with ``gather`` / ``scatter`` without collisions, and they must never be attended.
- Scores are float32 whatever the model dtype; ties break towards the lower position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from sparkv.config import EvictionConfig

__all__ = ["TokenSelection", "gather_tokens", "select_tokens"]


@dataclass(frozen=True)
class TokenSelection:
    """Tokens kept by an eviction method, per (batch row, KV head).

    Attributes
    ----------
    indices : LongTensor ``[B, H, N]``
        Token positions into the layer's ``S`` cached tokens. For each (b, h) the first ``lengths[b]`` entries are
        the kept valid tokens in ascending position order; the remaining ``N - lengths[b]`` entries are padding
        (distinct, not-kept positions, ascending) and must never be attended.
    lengths : LongTensor ``[B]``
        Number of kept valid tokens of each row (the same for every head of the row). ``N = lengths.max()``.
    """

    indices: torch.Tensor
    lengths: torch.Tensor

    @property
    def num_tokens(self) -> int:
        """``N``, the padded number of kept tokens per (b, h)."""
        return self.indices.shape[-1]

    def valid_mask(self) -> torch.Tensor:
        """``[B, N]`` bool: True where the entry is a kept valid token (index ``< lengths[b]``)."""
        n = self.indices.shape[-1]
        return torch.arange(n, device=self.indices.device)[None, :] < self.lengths[:, None]


def gather_tokens(x: torch.Tensor, selection: TokenSelection) -> torch.Tensor:
    """Gather the selected tokens of a per-head tensor.

    Parameters
    ----------
    x : Tensor ``[B, H, S, D]``
        Keys or values (any dtype).
    selection : TokenSelection
        ``indices [B, H, N]`` into ``S``.

    Returns
    -------
    Tensor ``[B, H, N, D]``
        ``out[b, h, n] = x[b, h, indices[b, h, n]]``, same dtype as ``x``. Rows past ``lengths[b]`` hold padding
        tokens' data and must be masked by the caller.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, H, S, D], got shape {tuple(x.shape)}")
    idx = selection.indices
    if idx.dim() != 3 or idx.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"selection.indices must be [B, H, N] with B, H = {tuple(x.shape[:2])}, got {tuple(idx.shape)}"
        )
    return x.gather(2, idx.to(x.device)[..., None].expand(-1, -1, -1, x.shape[-1]))


# --------------------------------------------------------------------------------------------------------------
# Shared helpers of the eviction methods (private to sparkv.methods)
# --------------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_budget_or_ratio(token_budget: object, token_ratio: object, reserved: int, reserved_name: str) -> None:
    """Exactly one of ``token_budget`` (> reserved) and ``token_ratio`` (in [0, 1)) is set."""
    if (token_budget is None) == (token_ratio is None):
        raise ValueError("exactly one of token_budget and token_ratio must be set")
    if token_budget is not None:
        _check_int("token_budget", token_budget, 1)
        if token_budget <= reserved:
            raise ValueError(f"token_budget must be greater than {reserved_name} ({reserved}), got {token_budget}")
    else:
        if not isinstance(token_ratio, (int, float)) or isinstance(token_ratio, bool) or not 0.0 <= token_ratio < 1.0:
            raise ValueError(f"token_ratio must be a number in [0, 1), got {token_ratio!r}")


def _check_valid_mask(valid_mask: torch.Tensor | None, batch: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """Return a ``[B, S]`` bool mask on ``device`` (all True when ``valid_mask`` is None)."""
    if valid_mask is None:
        return torch.ones(batch, seq_len, dtype=torch.bool, device=device)
    if valid_mask.dtype != torch.bool:
        raise ValueError(f"valid_mask must be a bool tensor, got dtype {valid_mask.dtype}")
    if tuple(valid_mask.shape) != (batch, seq_len):
        raise ValueError(f"valid_mask must have shape [B, S] = {(batch, seq_len)}, got {tuple(valid_mask.shape)}")
    return valid_mask.to(device)


def _ratio_keep(num_valid: torch.Tensor, token_ratio: float) -> torch.Tensor:
    """``int((1 - ratio) * n)`` per row, computed as Python does (float64 product, truncation)."""
    return torch.tensor(
        [int((1.0 - token_ratio) * n) for n in num_valid.tolist()], dtype=torch.long, device=num_valid.device
    )


def _select_by_priority(priority: torch.Tensor, keep: torch.Tensor) -> TokenSelection:
    """Keep the ``keep[b]`` highest-priority positions of every (b, h); ties go to the lower position.

    Parameters
    ----------
    priority : Tensor ``[B, H, S]`` float
        ``+inf`` for tokens that must be kept, ``-inf`` for padding tokens, finite values otherwise. No NaN.
    keep : LongTensor ``[B]``
        Tokens to keep per row; the caller guarantees ``keep[b] <=`` the row's number of valid tokens so padding is
        never kept.

    Returns
    -------
    TokenSelection
        ``N = max(keep)``; kept positions ascending, then the lowest not-kept positions as padding.
    """
    B, H, S = priority.shape
    device = priority.device
    pos = torch.arange(S, device=device).expand(B, H, S)
    # Stable descending sort: equal priorities stay in position order, so the lower position wins a tie.
    order = torch.sort(priority, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(-1, order, pos)
    kept = rank < keep.to(device)[:, None, None]
    n_out = int(keep.max().item()) if B > 0 else 0
    # Kept positions first (ascending), then the others (ascending); the sort keys are unique.
    sort_key = (~kept).long() * S + pos
    indices = torch.sort(sort_key, dim=-1).indices[..., :n_out].contiguous()
    return TokenSelection(indices=indices, lengths=keep.to(device=device, dtype=torch.long).clone())


# --------------------------------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------------------------------


def select_tokens(
    cfg: EvictionConfig,
    window_queries: torch.Tensor | None,
    keys: torch.Tensor,
    valid_mask: torch.Tensor | None,
    scaling: float | None,
    layer_idx: int,
    num_layers: int,
) -> TokenSelection:
    """Choose the surviving prompt tokens of one layer with the method named by ``cfg.method``.

    Parameters
    ----------
    cfg : EvictionConfig
        ``method`` in {"snapkv", "pyramidkv", "streamingllm"} and its budget (``token_budget`` or ``token_ratio``),
        ``window``, ``kernel_size``, ``pyramid_beta``, ``sink_tokens``, ``pyramid_fallback_compat``.
    window_queries : Tensor ``[B, HQ, W', D]`` or None
        The last ``W' >= min(cfg.window, S)`` prompt queries exactly as attention sees them (post-RoPE, post
        q_norm); only the last ``cfg.window`` are used. Unused (may be None) for StreamingLLM.
    keys : Tensor ``[B, H, S, D]``
        The layer's cached prompt keys (post-RoPE).
    valid_mask : Tensor ``[B, S]`` bool or None
        False on left-padding tokens.
    scaling : float or None
        Attention scaling of the layer (``module.scaling``); None means ``D ** -0.5``.
    layer_idx, num_layers : int
        Position of the layer in the model (PyramidKV's per-layer budget).

    Returns
    -------
    TokenSelection
        ``indices [B, H, N]``, ``lengths [B]``.
    """
    method = cfg.method
    if method in ("snapkv", "pyramidkv") and window_queries is None:
        raise ValueError(f"window_queries are required for eviction method {method!r}")
    if method == "snapkv":
        from sparkv.methods.snapkv import snapkv_select

        return snapkv_select(
            window_queries,
            keys,
            scaling,
            valid_mask,
            token_budget=cfg.token_budget,
            token_ratio=cfg.token_ratio,
            window=cfg.window,
            kernel_size=cfg.kernel_size,
        )
    if method == "pyramidkv":
        from sparkv.methods.pyramidkv import pyramidkv_select

        return pyramidkv_select(
            window_queries,
            keys,
            scaling,
            valid_mask,
            layer_idx=layer_idx,
            num_layers=num_layers,
            token_budget=cfg.token_budget,
            token_ratio=cfg.token_ratio,
            window=cfg.window,
            kernel_size=cfg.kernel_size,
            beta=cfg.pyramid_beta,
            compat_fallback=cfg.pyramid_fallback_compat,
        )
    if method == "streamingllm":
        from sparkv.methods.streaming import streaming_select

        return streaming_select(
            keys,
            valid_mask,
            token_budget=cfg.token_budget,
            token_ratio=cfg.token_ratio,
            sink_tokens=cfg.sink_tokens,
        )
    raise ValueError(f"eviction method must be one of snapkv, pyramidkv, streamingllm; got {method!r}")
