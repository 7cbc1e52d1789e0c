"""SparK's tensor math (spec §1-§3): window statistic, saliency, kept set, recovery.

Shapes: keys ``[B, H, S, D]``, window queries ``[B, HQ, W, D]`` with ``HQ = H·G``, statistic ``a [B, H, D]``.
All scores are float32 whatever the model dtype.

Recoveries (how a pruned entry K[t, j] is rebuilt inside attention; kept entries are exact):
    mean         K̂ = sign(K)·sqrt(s̄_t / a_j),  s̄_t = mean of s[t, j] over pruned j.
                 Stored as r_t = sqrt(s̄_t), u_j = a_j^(-1/2):  K̂ = sign·r_t·u_j.
    mean_linear  |K̂| = mean_pruned(a·|K|) / a_j.  Stored as r_t = mean_pruned(a·|K|), u_j = 1/a_j.
    constant     |K̂| = c (``recovery_constant``), with the true sign.
    zero         K̂ = 0 (plain unstructured pruning).
    gaussian     pruned saliencies drawn from N(μ_t, σ_t²) fitted to the token's pruned saliencies, clamped at 0;
    exponential  ... or from Exp(mean μ_t); then K̂ = sign·sqrt(ŝ / a_j). Draws come from a counter-based hash of
                 (seed, h, t, j), so the same entry is recovered identically at every decode step, and in any batch
                 row, without storing it (stored per token: μ_t, σ_t; per head: u_j = a_j^(-1/2)).
                 These two ablations differ from the authors' code, which fits μ, σ over all D saliencies of the
                 token, sorts the draws to follow the pruned channels' true saliency order and caps them at the
                 selection threshold. Sorting needs that order, which a compressed layout does not keep (storing
                 it would cost more than the kept values), so sparkv fits the pruned saliencies themselves: the
                 draws then have the distribution of what they replace, in random order.
"""

from __future__ import annotations

import math

import torch

# Guard for a_j == 0 (spec §1): a channel no window query uses gets a tiny weight rather than a division by zero.
STAT_EPS = 1e-8


def window_statistic(window_queries: torch.Tensor, num_kv_heads: int) -> torch.Tensor:
    """Observation-window query statistic ``a`` (spec §1).

    ``Q̄[b, h, w, j]`` = mean over the G query heads of group h of the *signed* queries;
    ``a[b, h, j] = sqrt(Σ_w Q̄[b, h, w, j]²)``, clamped below at ``STAT_EPS``.

    Args:
        window_queries: ``[B, HQ, W, D]``, the last W prompt queries exactly as attention used them.
        num_kv_heads: H; ``HQ`` must be a multiple of it.

    Returns:
        ``[B, H, D]`` float32.
    """
    b, hq, w, d = window_queries.shape
    if hq % num_kv_heads:
        raise ValueError(f"query heads ({hq}) must be a multiple of num_kv_heads ({num_kv_heads})")
    qbar = window_queries.float().view(b, num_kv_heads, hq // num_kv_heads, w, d).mean(2)
    return qbar.square().sum(2).sqrt().clamp_min(STAT_EPS)


def spark_saliency(keys: torch.Tensor, stat: torch.Tensor, variant: str = "code") -> torch.Tensor:
    """Per-entry saliency ``s [B, H, S, D]`` float32: ``a_j·K²`` (``code``) or ``a_j·|K|`` (``paper``)."""
    k = keys.float()
    a = stat.unsqueeze(-2)
    if variant == "code":
        return a * k.square()
    if variant == "paper":
        return a * k.abs()
    raise ValueError(f"saliency must be 'code' or 'paper', got {variant!r}")


def select_kept_mask(saliency: torch.Tensor, kept: int) -> torch.Tensor:
    """Boolean ``[..., D]`` map of the ``kept`` largest saliencies per token; ties go to the lower channel index."""
    d = saliency.shape[-1]
    if not 1 <= kept <= d:
        raise ValueError(f"kept channels must be in [1, {d}], got {kept}")
    # A stable descending sort keeps equal scores in ascending channel order, so the lower index wins a tie.
    order = torch.sort(saliency, dim=-1, descending=True, stable=True).indices[..., :kept]
    return torch.zeros_like(saliency, dtype=torch.bool).scatter_(-1, order, True)


def pruned_mean(x: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over pruned channels, ``[..., D] -> [...]`` (0 where nothing is pruned)."""
    n = pruned.sum(-1).clamp_min(1)
    return (x * pruned).sum(-1) / n


def pruned_std(x: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """Population std of ``x`` over pruned channels."""
    mu = pruned_mean(x, pruned)
    return pruned_mean((x - mu.unsqueeze(-1)).square(), pruned).sqrt()


# --- counter-based sampler (gaussian / exponential recoveries) -------------------------------------------------

_M32 = 0xFFFFFFFF


def _pcg_hash(x: torch.Tensor) -> torch.Tensor:
    """PCG output hash on uint32 values carried in int64 (low 32 bits are exact under int64 wrap-around)."""
    state = (x * 747796405 + 2891336453) & _M32
    shift = torch.bitwise_right_shift(state, 28) + 4
    word = ((torch.bitwise_right_shift(state, shift) ^ state) * 277803737) & _M32
    return (torch.bitwise_right_shift(word, 22) ^ word) & _M32


def entry_uniforms(shape: tuple[int, int, int, int], seed: int, stream: int, device,
                   token_offset: int = 0) -> torch.Tensor:
    """Uniforms in (0, 1) ``[B, H, S, D]`` for entries ``(b, h, token_offset + t, j)``.

    A pure function of (seed, stream, h, t, j): any block of tokens draws exactly what the whole tensor would, and
    the batch row is left out so that a prompt draws the same whether it runs alone or in any row of a batch (rows
    are left-aligned, so ``t`` is the token's index within its own row).
    """
    b, h, s, d = shape

    def ax(n: int, dim: int, offset: int = 0) -> torch.Tensor:
        view = [1, 1, 1, 1]
        view[dim] = n
        return (torch.arange(n, device=device, dtype=torch.int64) + offset).view(view)

    key = _pcg_hash(torch.tensor((seed & _M32) ^ ((stream * 0x9E3779B9) & _M32), device=device, dtype=torch.int64))
    # One hash round where the batch row used to enter: every row draws what row 0 drew before (so earlier
    # single-row results reproduce); the rows share the draws (expanded below).
    key = _pcg_hash(key)
    key = _pcg_hash(key ^ ax(h, 1))
    key = _pcg_hash(key ^ (ax(s, 2, token_offset) & _M32))
    bits = _pcg_hash(key ^ ax(d, 3))
    return ((bits.double() + 0.5) / 2.0**32).expand(b, h, s, d)


def sample_saliency(kind: str, mu: torch.Tensor, sigma: torch.Tensor | None, head_dim: int, seed: int,
                    token_offset: int = 0) -> torch.Tensor:
    """Draw ``ŝ [B, H, S, D]`` float32: N(μ_t, σ_t²) clamped at 0 (``gaussian``) or Exp(mean μ_t) (``exponential``).

    ``mu``, ``sigma``: ``[B, H, S]`` for tokens ``token_offset ...``. Deterministic in (seed, h, t, j).
    """
    b, h, s = mu.shape
    shape = (b, h, s, head_dim)
    u1 = entry_uniforms(shape, seed, 1, mu.device, token_offset)
    mu4 = mu.float().unsqueeze(-1)
    if kind == "exponential":
        return (-torch.log(u1)).float() * mu4
    if kind == "gaussian":
        if sigma is None:
            raise ValueError("gaussian recovery needs sigma")
        u2 = entry_uniforms(shape, seed, 2, mu.device, token_offset)
        z = (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).float()
        return (mu4 + sigma.float().unsqueeze(-1) * z).clamp_min(0.0)
    raise ValueError(f"sampled recovery must be 'gaussian' or 'exponential', got {kind!r}")
