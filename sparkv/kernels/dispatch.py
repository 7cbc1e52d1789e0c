"""Backend choice shared by every op's dispatcher."""

from __future__ import annotations

import os

import torch

from sparkv.config import BACKENDS


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, device: torch.device, supported: bool = True) -> str:
    """``auto`` -> ``triton`` on CUDA (or under ``TRITON_INTERPRET=1``) when the op supports the case, else ``torch``.

    ``triton`` forced on an unsupported case raises instead of silently falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "torch":
        return "torch"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    runnable = triton_available() and (device.type == "cuda" or interpret)
    if backend == "triton":
        if not runnable:
            raise ValueError("backend='triton' needs the triton package and a CUDA device (or TRITON_INTERPRET=1); "
                             "use 'auto' or 'torch' here")
        if not supported:
            raise ValueError("backend='triton' does not support this case (see the op's docstring); use 'torch'")
        return "triton"
    return "triton" if runnable and supported and device.type == "cuda" else "torch"
