"""Autotuning helpers shared by the Triton kernels.

``autotune`` wraps :func:`triton.autotune` and collapses the config list to one config under
``TRITON_INTERPRET=1`` (the interpreter runs every program in NumPy, one at a time: benchmarking configs there
would only burn CPU time, and small blocks keep the CPU tests quick). ``SPARKV_AUTOTUNE=0`` does the same on a
GPU with the first config (quick GPU test runs: one compile per kernel specialisation instead of one per config).
"""

from __future__ import annotations

import contextlib
import functools
import os

import triton


def cdiv(a: int, b: int) -> int:
    """Ceiling division of host integers: ``triton.cdiv`` is a constexpr function in Triton 3.6 that costs ~1.6 µs a
    call (``timeit`` on the 2-core development CPU, triton 3.6.0, 2026-11-29), paid several times per layer on every
    eager decode step."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= ``n`` (1 for n <= 1), for host integers: ``triton.next_power_of_2`` costs
    ~1.5 µs a call like ``triton.cdiv`` (same machine and versions)."""
    return 1 << max(n - 1, 0).bit_length()


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def _fix_interpreter_index() -> None:
    """Make the interpreter's ``tensor.__index__`` work with NumPy >= 2.4 (triton-lang/triton#9171, fixed upstream
    by #9172 after triton 3.6.0): scalars there are 1-element arrays, which ``int()`` no longer accepts, so every
    ``range`` with run-time bounds failed. Touches nothing outside ``TRITON_INTERPRET=1``."""
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_sparkv_index_fix", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._sparkv_index_fix = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _fix_interpreter_index()


def autotune_disabled() -> bool:
    """``SPARKV_AUTOTUNE=0``: take the first candidate instead of searching (quick GPU test runs)."""
    return os.environ.get("SPARKV_AUTOTUNE") == "0"


def autotune(configs: list[triton.Config], key: list[str], interpret_config: triton.Config | None = None, **kwargs):
    """:func:`triton.autotune` over ``configs``, or over ``[interpret_config or configs[0]]`` in the interpreter.

    Args:
        configs: candidate configs for the GPU.
        key: argument names whose change triggers a new search (keep sequence lengths out of it).
        interpret_config: the single config used under ``TRITON_INTERPRET=1`` (default: the first of ``configs``).
        **kwargs: passed to :func:`triton.autotune` (``prune_configs_by``, ``warmup``, ``rep``...).
    """
    if interpreting():
        configs = [interpret_config if interpret_config is not None else configs[0]]
    elif autotune_disabled():
        prune = (kwargs.get("prune_configs_by") or {}).get("early_config_prune")
        if prune is None:
            configs = configs[:1]
        else:  # first candidate of the family the kernel's own pruning keeps for these arguments
            kwargs["prune_configs_by"] = {**kwargs["prune_configs_by"],
                                          "early_config_prune": lambda *a, **kw: prune(*a, **kw)[:1]}
    return triton.autotune(configs=configs, key=key, **kwargs)


@functools.lru_cache(maxsize=None)
def num_sms(device_index: int) -> int:
    """Multiprocessor count of a CUDA device (cached); 8 when interpreting on the CPU."""
    import torch

    if not torch.cuda.is_available():
        return 8
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_device(device):
    """Context making ``device`` the current CUDA device while kernels are launched (a no-op off CUDA).

    Triton launches on the *current* device and stream, not on the device of the tensors it is given, so without
    this a model split across GPUs (``device_map="auto"``) would run a layer's kernel on another GPU than its cache.
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(device)
