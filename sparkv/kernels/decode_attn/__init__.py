"""decode_attn: attention over a compressed prefix + dense tail. ``backend``: auto | torch | triton."""

from __future__ import annotations

import torch

from sparkv.cache.layout import CompressedKV, Prefix, SparKKeys, SparKPages, ThinKKeys
from sparkv.kernels.decode_attn.reference import decode_attn_ref
from sparkv.kernels.dispatch import resolve_backend


def _fused_supports(query: torch.Tensor, prefix: Prefix | None) -> bool:
    if query.shape[2] != 1 or query.dtype not in (torch.float16, torch.bfloat16):
        return False
    if prefix is None or isinstance(prefix, SparKPages):
        return True
    keys = prefix.keys
    if isinstance(keys, ThinKKeys):
        return False
    return not (isinstance(keys, SparKKeys) and keys.recovery in ("gaussian", "exponential"))


# Up to this many new tokens a step (a continuation's, assisted decoding's candidates), the GPU kernels take them in
# one launch, folded into the kernels' head groups (the prefix read once per group of folded tokens); beyond, the
# blockwise PyTorch path takes all of them in one pass. At 64 tokens one launch was 15-67x faster than that path on
# the H200 with one query row per token (the most measured: benchmarks/multi_token_steps.py, BENCHMARKS.md
# "Session 39"); partials grow with the tokens.
PER_QUERY_KERNEL_MAX = 64


def decode_attn(query: torch.Tensor, prefix: Prefix | None, tail_keys: torch.Tensor | None,
                tail_values: torch.Tensor | None, scaling: float, backend: str = "auto",
                tail_length: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch to :func:`decode_attn_ref` or the Triton split-K kernel (see ``decode_attn_ref`` for arguments).

    ``auto`` takes the GPU kernels on CUDA for one-token decode in fp16/bf16, and for up to ``PER_QUERY_KERNEL_MAX``
    new tokens whose keys end the tail (folded into the kernels' head groups:
    :func:`~sparkv.kernels.decode_attn.fused.decode_attn_triton`), and the PyTorch path otherwise.
    """
    no_tail = tail_keys is None or tail_keys.shape[-2] == 0
    if prefix is not None and no_tail and prefix.lengths.numel() and prefix.min_length == 0:
        raise ValueError("a batch row with prefix.lengths[b] = 0 and no tail has no token to attend to (its output "
                         "would be 0/0)")
    q_len = query.shape[2]
    if backend == "triton" and q_len > PER_QUERY_KERNEL_MAX:
        raise ValueError(f"backend='triton' takes at most PER_QUERY_KERNEL_MAX = {PER_QUERY_KERNEL_MAX} new tokens a "
                         f"step, got {q_len}; use 'auto' (the PyTorch path takes longer "
                         "steps)")
    several = 1 < q_len <= PER_QUERY_KERNEL_MAX and tail_length is None and not no_tail \
        and tail_keys.shape[-2] >= q_len
    if resolve_backend(backend, query.device, supported=_fused_supports(query[:, :, :1] if several else query,
                                                                        prefix)) == "triton":
        from sparkv.kernels.decode_attn.fused import decode_attn_triton

        return decode_attn_triton(query, prefix, tail_keys, tail_values, scaling, tail_length=tail_length)
    return decode_attn_ref(query, prefix, tail_keys, tail_values, scaling, tail_length=tail_length)


def decode_storage(prefix: CompressedKV, query_heads: int, backend: str = "auto") -> Prefix:
    """The form to keep a freshly compressed prefix in for decoding: :class:`SparKPages` where decode steps will run
    the CUDA kernel on it (a CUDA device, ``backend`` not ``torch``, ``SPARKV_SPARK_KERNEL`` not ``triton``, a case
    the kernel supports and NVRTC builds), else ``prefix`` itself. The arrays are not kept beside the pages, so the
    caller should drop its reference to ``prefix``. ``query_heads``: the model's attention heads (the kernel's
    build depends on heads per KV head)."""
    from sparkv.kernels.decode_attn.fused import _spark_kernel_choice

    if prefix.device.type != "cuda" or not isinstance(prefix.keys, SparKKeys) \
            or resolve_backend(backend, prefix.device) != "triton" or _spark_kernel_choice(None) == "triton":
        return prefix
    from sparkv.kernels.decode_attn import cuda

    group = query_heads // prefix.num_heads
    if query_heads % prefix.num_heads or cuda.supported(prefix, group) is not None:
        return prefix
    pages = SparKPages.from_compressed(prefix)
    return pages if cuda.build(pages, group, prefix.dtype) is None else prefix


__all__ = ["decode_attn", "decode_attn_ref", "decode_storage"]
