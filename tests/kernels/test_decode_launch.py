"""How the decode launcher chooses a config and a split count (``fused.launch_candidates`` / ``_choose_launch``)."""

from __future__ import annotations

import pytest
import torch
import triton

from sparkv.kernels.decode_attn import fused


def test_candidates_pair_configs_with_split_counts():
    dense = fused.launch_candidates(fused.LAYOUT_DENSE, 128)
    assert [c for c, _ in dense] == fused.DENSE_CONFIGS and {p for _, p in dense} == {fused.PROGRAMS_PER_SM["dense"]}
    large = fused.launch_candidates(fused.LAYOUT_SPARK, 128)
    assert [c for c, _ in large] == fused.SPARK_CONFIGS and {p for _, p in large} == {fused.PROGRAMS_PER_SM["spark"]}
    small = fused.launch_candidates(fused.LAYOUT_SPARK, 64)
    extra = small[len(fused.SPARK_CONFIGS):]
    assert [c for c, _ in extra] == fused.SPARK_CONFIGS_SMALL_HEAD
    assert {p for _, p in extra} == {fused.PROGRAMS_PER_SM["spark_small_head"]}
    assert all(c.num_warps == 1 for c, _ in extra)


def _candidates():
    return [(triton.Config({"BS": bs, "EXPAND": 2, "PF": 1}, num_warps=4, num_stages=3), per_sm)
            for bs, per_sm in ((32, 8), (64, 8), (16, 24))]


def test_choose_launch_takes_the_fastest_and_skips_failures(monkeypatch):
    monkeypatch.delenv("SPARKV_AUTOTUNE", raising=False)
    times = {32: 3.0, 64: None, 16: 1.5}  # BS 64 fails to compile
    calls = []

    def prepare(launch, per_sm):
        calls.append((launch["BS"], per_sm))
        if times[launch["BS"]] is None:
            raise RuntimeError("out of resources")
        return (lambda: times[launch["BS"]]), None, None, 1

    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", lambda fn, **kw: fn())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    launch, per_sm = fused._choose_launch(prepare, _candidates())
    assert (launch["BS"], per_sm) == (16, 24)
    assert launch["num_warps"] == 4 and launch["num_stages"] == 3 and "maxnreg" in launch
    assert sorted(calls) == [(16, 24), (32, 8), (64, 8)]


def test_choose_launch_reports_when_nothing_runs(monkeypatch):
    monkeypatch.delenv("SPARKV_AUTOTUNE", raising=False)
    monkeypatch.setattr(triton.testing, "do_bench_cudagraph", lambda fn, **kw: fn())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)

    def prepare(launch, per_sm):
        def split_kernel():
            raise RuntimeError(f"cannot compile BS={launch['BS']}")
        return split_kernel, None, None, 1

    with pytest.raises(RuntimeError, match="no decode kernel candidate ran.*cannot compile BS=32"):
        fused._choose_launch(prepare, _candidates())


def test_choose_launch_disabled_takes_the_first_untimed(monkeypatch):
    monkeypatch.setenv("SPARKV_AUTOTUNE", "0")

    def prepare(launch, per_sm):
        raise AssertionError("SPARKV_AUTOTUNE=0 must not time candidates")

    launch, per_sm = fused._choose_launch(prepare, _candidates())
    assert (launch["BS"], per_sm) == (32, 8)


def test_size_class_is_log4_of_the_prefix_work():
    assert [fused.size_class(2, 4, s) for s in (32, 63, 64, 255, 256)] == [4, 4, 5, 5, 6]  # B·H·S 256 to 2048
    assert fused.size_class(1, 1, 0) == 0


@pytest.mark.gpu
def test_the_launch_choice_is_kept_while_the_tail_grows(monkeypatch):
    """Eager decoding grows the tail a token a step: the choice (timed once per key) must not be made again when the
    tail crosses a power of 4 of the prefix's work, or eager steps and a CUDA graph (whose tail is its reserved
    length from the first step) would run different launches."""
    from sparkv.cache.layout import CompressedKV, DenseKeys

    monkeypatch.setenv("SPARKV_AUTOTUNE", "0")  # the first candidate, untimed: the keys are what is checked
    monkeypatch.setattr(fused, "_TUNED", {})
    gen = torch.Generator().manual_seed(0)
    b, h, g, s, d = 2, 2, 2, 100, 64

    def rnd(*shape):
        return torch.randn(*shape, generator=gen).to(torch.bfloat16).cuda()

    prefix = CompressedKV(DenseKeys(rnd(b, h, s, d)), rnd(b, h, s, d), torch.tensor([s, 60], dtype=torch.int32).cuda())
    tail_k, tail_v, q = rnd(b, h, 400, d), rnd(b, h, 400, d), rnd(b, h * g, 1, d)
    for st in (1, 50, 400):  # B·H·(S + tail) 404, 600, 2000: classes 4, 5, 5 if the tail counted
        out = fused.decode_attn_triton(q, prefix, tail_k[:, :, :st], tail_v[:, :, :st], d ** -0.5)
        assert not torch.isnan(out).any()
    assert len(fused._TUNED) == 1
