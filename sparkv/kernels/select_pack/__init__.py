"""select_pack: dense keys + window statistic -> SparK layout. ``backend``: auto | torch | triton."""

from __future__ import annotations

import torch

from sparkv.cache.layout import SparKKeys
from sparkv.kernels.dispatch import resolve_backend
from sparkv.kernels.select_pack.reference import select_pack_ref


def check_stat(stat: torch.Tensor) -> None:
    """The window statistic must be finite and > 0 (``window_statistic`` floors it at a tiny epsilon): ``u = a^-1/2``
    and the saliencies divide by it, so a zero, negative or NaN entry would give NaN attention later."""
    if isinstance(stat, torch.Tensor) and stat.numel() and not bool((torch.isfinite(stat) & (stat > 0)).all()):
        raise ValueError("stat must be finite and > 0 everywhere (use sparkv.methods.spark.window_statistic, which "
                         "floors it); got a zero, negative, inf or NaN entry")


# Recoveries whose metadata the fused kernel writes; the others are ablations served by the reference.
FUSED_RECOVERIES = ("mean", "mean_linear", "zero", "constant")


def select_pack(keys: torch.Tensor, stat: torch.Tensor, kept: int, saliency: str = "code", recovery: str = "mean",
                recovery_constant: float = 0.01, seed: int = 0, backend: str = "auto") -> SparKKeys:
    """Dispatch to :func:`select_pack_ref` or the Triton kernel (see ``select_pack_ref`` for arguments)."""
    check_stat(stat)
    if resolve_backend(backend, keys.device, supported=recovery in FUSED_RECOVERIES) == "triton":
        from sparkv.kernels.select_pack.fused import select_pack_triton

        return select_pack_triton(keys, stat, kept, saliency, recovery, recovery_constant, seed)
    return select_pack_ref(keys, stat, kept, saliency, recovery, recovery_constant, seed)


__all__ = ["select_pack", "select_pack_ref"]
