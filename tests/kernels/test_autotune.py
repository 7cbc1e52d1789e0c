"""sparkv.kernels.autotune: SPARKV_AUTOTUNE=0 keeps the first candidate of what the kernel's pruning keeps."""

from __future__ import annotations

import triton
import triton.language as tl

from sparkv.kernels import autotune as at


@triton.jit
def _noop(x, A: tl.constexpr):
    pass


CONFIGS = [triton.Config({"A": i}) for i in range(4)]


def _tuner(monkeypatch, env, prune=None):
    monkeypatch.setattr(at, "interpreting", lambda: False)
    if env is None:
        monkeypatch.delenv("SPARKV_AUTOTUNE", raising=False)
    else:
        monkeypatch.setenv("SPARKV_AUTOTUNE", env)
    kwargs = {"prune_configs_by": {"early_config_prune": prune}} if prune else {}
    return at.autotune(CONFIGS, key=[], **kwargs)(_noop)


def keep_last_two(configs, named_args, **kwargs):
    return configs[2:]


def test_disabled_takes_first_of_the_pruned_family(monkeypatch):
    tuner = _tuner(monkeypatch, "0", keep_last_two)
    assert [c.kwargs["A"] for c in tuner.early_config_prune(CONFIGS, {})] == [2]


def test_disabled_without_prune_takes_first(monkeypatch):
    assert [c.kwargs["A"] for c in _tuner(monkeypatch, "0").configs] == [0]


def test_enabled_keeps_every_candidate(monkeypatch):
    tuner = _tuner(monkeypatch, None, keep_last_two)
    assert len(tuner.configs) == 4
    assert [c.kwargs["A"] for c in tuner.early_config_prune(CONFIGS, {})] == [2, 3]


def test_host_integer_helpers_match_triton():
    """``cdiv`` / ``next_power_of_2`` stand in for Triton's (slow on the host) on every decode step: same values."""
    for n in range(1, 1100):
        assert at.next_power_of_2(n) == triton.next_power_of_2(n)
        for d in (1, 2, 3, 32, 128, 1000):
            assert at.cdiv(n, d) == triton.cdiv(n, d)
