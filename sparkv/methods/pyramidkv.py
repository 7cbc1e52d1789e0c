"""PyramidKV token eviction (Cai et al., 2024; spec §4), the SparK paper's ``pyramid_spark`` press.

SnapKV's scores with a per-layer budget that falls linearly from the first layer to the last, so lower layers
(broad attention) keep more tokens than upper layers (focused attention) while the average stays the budget.

Budget formula (authors' KVCache-Factory ``PyramidKVCluster``)
--------------------------------------------------------------
With ``M`` the budget, ``w`` the window, ``β`` the shape parameter and ``L`` layers:
``min_num = (M - w) / β``, ``max_num = 2(M - w) - min_num``; layer ``l`` keeps
``w + round(max_num - l · (max_num - min_num) / (L - 1))`` tokens. ``max_num + min_num = 2(M - w)``, so the
layers keep ``M`` tokens on average: *the budget counts the window*, as in SnapKV (spec §4).
If the prompt length ``P`` is known and ``max_num >= P - w``, the authors clamp ``max_num = P - w`` and
``min_num = 2(M - w) - max_num`` (same average, first layer keeps the whole prompt).

Decisions (where published codes differ)
----------------------------------------
- Window accounting: KVCache-Factory keeps ``max_num - l·steps`` non-window tokens *plus* the window (average
  ``M``). The SparK fork of kvpress instead takes ``topk(max_num - l·steps)`` over all tokens, the window included
  (average ``M - w``, i.e. 64 tokens fewer than the nominal budget). We follow KVCache-Factory, which matches the
  spec's "budget counts the window" and SnapKV's accounting, so SnapKV and PyramidKV at the same budget hold the
  same number of tokens on average.
- Arithmetic: exact (rational) ``min_num``, ``max_num`` and step, rounded half to even per layer, so that the budgets
  total exactly ``L·M`` (:func:`pyramid_budgets`; KVCache-Factory floors
  ``min_num`` and the step, which makes the average drift below ``M``; newer kvpress uses floats and ``round``).
- Fallback: the SparK fork keeps ``round(0.9 · P)`` tokens in every layer whenever
  ``not (P >= max_num >= min_num >= w)``, i.e. for every budget below ``w + 20·w = 1344`` at the defaults. That is
  a bug (a "budget 128" run keeps 90% of the prompt); it is reproduced only with ``compat_fallback=True`` (only the
  fallback: the window accounting stays ours).
- Ratio mode: a row with ``n`` valid tokens uses ``M = int((1 - ratio) · n)`` (kvpress uses ``w + (1 - ratio)·n``).
- Short prompts: if ``P <= M`` every layer keeps the whole prompt (KVCache-Factory does the same; it also switches
  to a uniform SnapKV budget for ``P < 2(M - w)``, which we do not copy: the clamp above already keeps the
  pyramid valid there).
"""

from __future__ import annotations

from fractions import Fraction

import torch

from sparkv.methods.eviction import (
    TokenSelection,
    _check_budget_or_ratio,
    _check_int,
    _check_valid_mask,
)
from sparkv.methods.snapkv import _check_kernel, _check_qk, _snapkv_select_keep

__all__ = ["pyramid_budgets", "pyramidkv_select"]


def pyramid_budgets(
    token_budget: int,
    num_layers: int,
    window: int = 64,
    beta: int = 20,
    compat_fallback: bool = False,
    prompt_len: int | None = None,
    *,
    fallback_keep_fraction: float = 0.9,
) -> list[int]:
    """Per-layer token budgets of PyramidKV (window included), layer 0 first.

    ``m = token_budget - window``, ``min_num = m / beta``, ``max_num = 2m - min_num``; if ``prompt_len`` is given
    and ``max_num >= prompt_len - window``: ``max_num = prompt_len - window``, ``min_num = 2m - max_num``. Layer
    ``l`` gets ``window + round(n_l)`` (half to even) with
    ``n_l = max_num - l · (max_num - min_num) / (num_layers - 1)`` (``n_0 = m`` for a single layer). The list is
    non-increasing and sums to ``num_layers · token_budget``.

    Parameters
    ----------
    token_budget : int
        Average tokens kept per layer, window included (``M``); must exceed ``window``.
    num_layers : int
        Number of layers ``L`` (>= 1).
    window : int
        Observation window ``w`` (64).
    beta : int
        Pyramid shape ``β`` (20); larger is steeper.
    compat_fallback : bool
        Reproduce the SparK fork's bug: when ``not (prompt_len >= max_num >= min_num >= window)`` every layer gets
        ``round(fallback_keep_fraction · prompt_len)`` (Python ``round``). Needs ``prompt_len`` when it fires.
    prompt_len : int, optional
        Valid prompt tokens ``P``. If ``P <= token_budget`` every layer gets ``P`` (keep everything).
    fallback_keep_fraction : float
        Fraction kept by the compat fallback: 0.9 in budget mode (the fork's default ``compression_ratio=0.1``),
        ``1 - token_ratio`` in ratio mode.

    Returns
    -------
    list[int]
        ``num_layers`` budgets.
    """
    _check_int("num_layers", num_layers, 1)
    _check_int("window", window, 1)
    _check_int("beta", beta, 1)
    _check_int("token_budget", token_budget, 1)
    if token_budget <= window:
        raise ValueError(f"token_budget must be greater than window ({window}), got {token_budget}")
    if prompt_len is not None:
        _check_int("prompt_len", prompt_len, 0)
        if prompt_len <= token_budget:
            return [prompt_len] * num_layers
    # Exact rational arithmetic, so the per-layer rounding never depends on float error.
    m = token_budget - window
    min_num = Fraction(m, beta)
    max_num = 2 * m - min_num
    if prompt_len is not None and max_num >= prompt_len - window:
        max_num = Fraction(prompt_len - window)
        min_num = 2 * m - max_num
    if compat_fallback:
        in_range = min_num >= window and max_num >= min_num and (prompt_len is None or prompt_len >= max_num)
        if not in_range:
            if prompt_len is None:
                raise ValueError(
                    "prompt_len is required with compat_fallback=True: the published fallback keeps "
                    f"{fallback_keep_fraction:g} of the prompt (min_num = {float(min_num):g} < window = {window})"
                )
            return [round(prompt_len * fallback_keep_fraction)] * num_layers
    if num_layers == 1:
        return [token_budget]
    step = (max_num - min_num) / (num_layers - 1)
    # Half to even (Python's round, as kvpress): layers l and L-1-l sum to 2m, and when both sit on .5 one rounds
    # down and the other up, so the budgets total exactly L·M (half up overshot by one token per such pair).
    return [window + round(max_num - layer * step) for layer in range(num_layers)]


def pyramidkv_select(
    window_queries: torch.Tensor,
    keys: torch.Tensor,
    scaling: float | None,
    valid_mask: torch.Tensor | None = None,
    *,
    layer_idx: int,
    num_layers: int,
    token_budget: int | None = None,
    token_ratio: float | None = None,
    window: int = 64,
    kernel_size: int = 5,
    beta: int = 20,
    compat_fallback: bool = False,
) -> TokenSelection:
    """PyramidKV: SnapKV selection with the budget of layer ``layer_idx`` from :func:`pyramid_budgets`.

    For a row with ``n`` valid tokens: ``M = token_budget`` (budget mode) or ``int((1 - token_ratio) · n)`` (ratio
    mode); the row keeps ``k = min(n, max(min(W, n), pyramid_budgets(M, num_layers, window, beta, compat_fallback,
    prompt_len=n)[layer_idx]))`` tokens (``k = min(n, max(M, min(W, n)))`` when a ratio gives ``M <= window``),
    chosen exactly as :func:`sparkv.methods.snapkv.snapkv_select` chooses them (window kept, top SnapKV scores,
    ties to the lower position, padding never kept). ``W = min(window, S)``.

    Parameters
    ----------
    window_queries : Tensor ``[B, HQ, W', D]``
        The last ``W' >= min(window, S)`` prompt queries (post-RoPE, post q_norm).
    keys : Tensor ``[B, H, S, D]``
        Cached prompt keys of this layer.
    scaling : float or None
        Attention logit scale; None means ``D ** -0.5``.
    valid_mask : Tensor ``[B, S]`` bool, optional
        False on left-padding tokens.
    layer_idx, num_layers : int
        This layer's index (0 = first) and the model's number of layers.
    token_budget, token_ratio :
        Exactly one: average tokens kept per layer (window included, > window), or the fraction evicted.
    window, kernel_size, beta, compat_fallback :
        As in :func:`pyramid_budgets` and SnapKV.

    Returns
    -------
    TokenSelection
        ``indices [B, H, N]``, ``lengths [B]``.
    """
    B, HQ, Wq, D, H, S = _check_qk(window_queries, keys)
    _check_int("window", window, 1)
    _check_kernel(kernel_size)
    _check_int("num_layers", num_layers, 1)
    _check_int("beta", beta, 1)
    if not isinstance(layer_idx, int) or isinstance(layer_idx, bool) or not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx must be an integer in [0, {num_layers}), got {layer_idx!r}")
    _check_budget_or_ratio(token_budget, token_ratio, window, "window")
    W = min(window, S)
    if Wq < W:
        raise ValueError(f"window_queries must hold at least min(window, S) = {W} queries, got {Wq}")
    key_valid = _check_valid_mask(valid_mask, B, S, keys.device)
    n_valid = key_valid.sum(-1)

    keep = []
    for n in n_valid.tolist():
        if token_budget is not None:
            budget, fraction = token_budget, 0.9
        else:
            budget, fraction = int((1.0 - token_ratio) * n), 1.0 - token_ratio
        if budget > window:
            budget = pyramid_budgets(
                budget, num_layers, window, beta, compat_fallback, prompt_len=n, fallback_keep_fraction=fraction
            )[layer_idx]
        keep.append(min(n, max(budget, min(W, n))))
    keep_t = torch.tensor(keep, dtype=torch.long, device=keys.device)
    return _snapkv_select_keep(window_queries[:, :, Wq - W :], keys, scaling, key_valid, keep_t, kernel_size)
