"""decode_attn: attention over a compressed prefix + dense tail. ``backend``: auto | torch | triton."""

from __future__ import annotations

import torch

from sparkv.cache.layout import CompressedKV, SparKKeys, ThinKKeys
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.dispatch import resolve_backend


def _fused_supports(query: torch.Tensor, prefix: CompressedKV | None) -> bool:
    if query.shape[2] != 1 or query.dtype not in (torch.float16, torch.bfloat16):
        return False
    if prefix is None:
        return True
    keys = prefix.keys
    if isinstance(keys, ThinKKeys):
        return False
    return not (isinstance(keys, SparKKeys) and keys.recovery in ("gaussian", "exponential"))


def decode_attn(query: torch.Tensor, prefix: CompressedKV | None, tail_keys: torch.Tensor | None,
                tail_values: torch.Tensor | None, scaling: float, backend: str = "auto",
                tail_length: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch to :func:`decode_attn_ref` or the Triton split-K kernel (see ``decode_attn_ref`` for arguments).

    ``auto`` takes Triton on CUDA for one-token decode in fp16/bf16 and the PyTorch path otherwise.
    """
    no_tail = tail_keys is None or tail_keys.shape[-2] == 0
    if prefix is not None and no_tail and prefix.lengths.numel() and prefix.min_length == 0:
        raise ValueError("a batch row with prefix.lengths[b] = 0 and no tail has no token to attend to (its output "
                         "would be 0/0)")
    if resolve_backend(backend, query.device, supported=_fused_supports(query, prefix)) == "triton":
        from sparkv.kernels.decode_attn.fused import decode_attn_triton

        return decode_attn_triton(query, prefix, tail_keys, tail_values, scaling, tail_length=tail_length)
    return decode_attn_ref(query, prefix, tail_keys, tail_values, scaling, tail_length=tail_length)


__all__ = ["decode_attn", "decode_attn_ref"]
