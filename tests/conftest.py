"""Shared test setup.

* Without CUDA, Triton kernels run in the CPU interpreter: ``TRITON_INTERPRET=1`` is set here, before any test
  module imports ``sparkv.kernels`` (``@triton.jit`` reads it when the kernel module is loaded).
* ``gpu`` tests are skipped without CUDA; ``interpret`` marks the quick CPU subset (``pytest -m interpret``).
* ``poison_empty``: every ``torch.empty`` / ``torch.empty_like`` made while a test runs is filled with NaN (floats)
  or a bit pattern (integers), so an output element a kernel forgot to write fails the comparison.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

# An int32 pattern no bitmap word of our tests equals by chance.
POISON_INT = 0x5A5A5A5A


def _poison(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() or t.is_complex():
        return t.fill_(float("nan"))
    if t.dtype == torch.bool:
        return t.fill_(True)
    info = torch.iinfo(t.dtype)
    return t.fill_(POISON_INT if info.max >= POISON_INT else info.max)


@pytest.fixture
def poison_empty(monkeypatch):
    """Fill every ``torch.empty`` / ``torch.empty_like`` result with NaN (or a bit pattern) for this test."""
    empty, empty_like = torch.empty, torch.empty_like

    def poisoned_empty(*args, **kwargs):
        return _poison(empty(*args, **kwargs))

    def poisoned_empty_like(*args, **kwargs):
        return _poison(empty_like(*args, **kwargs))

    monkeypatch.setattr(torch, "empty", poisoned_empty)
    monkeypatch.setattr(torch, "empty_like", poisoned_empty_like)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
