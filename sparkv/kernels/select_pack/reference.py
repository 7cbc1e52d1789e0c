"""PyTorch reference of ``select_pack``: dense keys + window statistic -> the SparK layout (spec §2-§3)."""

from __future__ import annotations

import torch

from sparkv.cache.layout import SparKKeys, pack_bits
from sparkv.methods.spark import pruned_mean, pruned_std, select_kept_mask, spark_saliency


def select_pack_ref(
    keys: torch.Tensor,
    stat: torch.Tensor,
    kept: int,
    saliency: str = "code",
    recovery: str = "mean",
    recovery_constant: float = 0.01,
    seed: int = 0,
) -> SparKKeys:
    """Select each token's ``kept`` most salient channels and pack them with their recovery metadata.

    Args:
        keys: ``[B, H, S, D]`` post-RoPE keys, model dtype.
        stat: ``[B, H, D]`` float32 window statistic ``a`` (``sparkv.methods.spark.window_statistic``).
        kept: DK, channels kept per token (``sparkv.config.kept_channels``).
        saliency, recovery, recovery_constant, seed: see ``SparKConfig``.

    Returns:
        A :class:`SparKKeys` whose tensors are compact (freshly allocated).
    """
    if keys.dim() != 4:
        raise ValueError(f"keys must be [B, H, S, D], got {tuple(keys.shape)}")
    b, h, s, d = keys.shape
    if stat.shape != (b, h, d):
        raise ValueError(f"stat must be [{b}, {h}, {d}], got {tuple(stat.shape)}")
    if not isinstance(kept, int) or isinstance(kept, bool) or not 1 <= kept <= d:
        raise ValueError(f"kept channels must be an integer in [1, {d}], got {kept!r}")
    score = spark_saliency(keys, stat, saliency)
    kept_mask = select_kept_mask(score, kept)
    pruned = ~kept_mask
    # Boolean indexing walks the last axis in order, so kept values land in ascending channel order.
    kept_values = keys[kept_mask].view(b, h, s, kept).contiguous()
    layout = dict(kept_values=kept_values, kept_bits=pack_bits(kept_mask), head_dim=d, recovery=recovery, seed=seed)
    if recovery != "zero":
        layout["sign_bits"] = pack_bits(keys > 0)
    a = stat.float()
    if recovery == "mean":
        layout["scale"] = pruned_mean(score, pruned).sqrt().to(keys.dtype)
        layout["u"] = a.rsqrt()
    elif recovery == "mean_linear":
        layout["scale"] = pruned_mean(a.unsqueeze(-2) * keys.float().abs(), pruned).to(keys.dtype)
        layout["u"] = a.reciprocal()
    elif recovery in ("gaussian", "exponential"):
        layout["scale"] = pruned_mean(score, pruned).to(keys.dtype)
        if recovery == "gaussian":
            layout["spread"] = pruned_std(score, pruned).to(keys.dtype)
        layout["u"] = a.rsqrt()
    elif recovery == "constant":
        layout["constant"] = float(recovery_constant)
    elif recovery != "zero":
        raise ValueError(f"unknown recovery {recovery!r}")
    return SparKKeys(**layout)
