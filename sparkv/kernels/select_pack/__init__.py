"""select_pack: dense keys + window statistic -> SparK layout. ``backend``: auto | torch | triton."""

from __future__ import annotations

import torch

from sparkv.cache.layout import SparKKeys
from sparkv.kernels.dispatch import resolve_backend
from sparkv.kernels.select_pack.reference import select_pack_ref

# Recoveries whose metadata the fused kernel writes; the others are ablations served by the reference.
FUSED_RECOVERIES = ("mean", "mean_linear", "zero", "constant")


def select_pack(keys: torch.Tensor, stat: torch.Tensor, kept: int, saliency: str = "code", recovery: str = "mean",
                recovery_constant: float = 0.01, seed: int = 0, backend: str = "auto") -> SparKKeys:
    """Dispatch to :func:`select_pack_ref` or the Triton kernel (see ``select_pack_ref`` for arguments)."""
    if resolve_backend(backend, keys.device, supported=recovery in FUSED_RECOVERIES) == "triton":
        from sparkv.kernels.select_pack.fused import select_pack_triton

        return select_pack_triton(keys, stat, kept, saliency, recovery, recovery_constant, seed)
    return select_pack_ref(keys, stat, kept, saliency, recovery, recovery_constant, seed)


__all__ = ["select_pack", "select_pack_ref"]
