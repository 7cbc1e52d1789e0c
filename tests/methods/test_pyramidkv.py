"""PyramidKV per-layer budgets (spec §4) and selection."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from sparkv.methods.pyramidkv import pyramid_budgets, pyramidkv_select
from sparkv.methods.snapkv import snapkv_select


def formula(M, L, w=64, beta=20, P=None):
    """Spec §4 with exact arithmetic: min_num = (M-w)/β, max_num = 2(M-w) - min_num, linear, plus the window."""
    if P is not None and P <= M:
        return [P] * L
    min_num = Fraction(M - w, beta)
    max_num = 2 * (M - w) - min_num
    if P is not None and max_num >= P - w:
        max_num = Fraction(P - w)
        min_num = 2 * (M - w) - max_num
    if L == 1:
        return [M]
    out = []
    for layer in range(L):
        n = max_num + (min_num - max_num) * Fraction(layer, L - 1)
        out.append(w + round(n))  # half to even, as kvpress's Python round
    return out


def test_budget_128_by_hand():
    """M=128, w=64: min_num = 3.2, max_num = 124.8, 32 layers (budget far below 1344, no fallback)."""
    b = pyramid_budgets(128, 32)
    assert b[0] == 64 + 125 and b[-1] == 64 + 3
    assert b[1] == 64 + round(124.8 - 121.6 / 31)  # 120.877 -> 121
    assert b == formula(128, 32)


@pytest.mark.parametrize("M", [65, 100, 128, 334, 374, 414, 512, 1024, 1343, 1344, 2048, 4096])
@pytest.mark.parametrize("L", [1, 2, 16, 28, 32, 36, 80])
def test_budgets_match_formula_and_are_monotone(M, L):
    b = pyramid_budgets(M, L)
    assert b == formula(M, L)
    assert len(b) == L and all(isinstance(x, int) for x in b)
    assert all(x >= y for x, y in zip(b, b[1:]))
    assert all(x >= 64 for x in b)
    assert sum(b) == L * M  # exactly the total budget (half-up rounding overshot, e.g. M=374, L=32: +16)


@pytest.mark.parametrize("w, beta", [(32, 10), (8, 1), (64, 40)])
def test_budgets_other_window_and_beta(w, beta):
    b = pyramid_budgets(300, 24, window=w, beta=beta)
    assert b == formula(300, 24, w, beta)
    if beta == 1:  # min_num = max_num: flat
        assert b == [300] * 24


def test_budget_below_1344_has_no_fallback_by_default():
    P = 4000
    b = pyramid_budgets(512, 32, prompt_len=P)
    assert b == formula(512, 32, P=P)
    assert b[0] == 64 + 874 and b[-1] == 64 + 22  # min_num = 22.4, max_num = 873.6
    assert max(b) < 0.9 * P


def test_compat_flag_reproduces_published_fallback():
    P = 4000
    assert pyramid_budgets(512, 32, compat_fallback=True, prompt_len=P) == [3600] * 32
    assert pyramid_budgets(1343, 32, compat_fallback=True, prompt_len=P) == [3600] * 32
    # min_num = (1344 - 64) / 20 = 64 >= w: no fallback, same as the default.
    assert pyramid_budgets(1344, 32, compat_fallback=True, prompt_len=P) == pyramid_budgets(1344, 32, prompt_len=P)
    assert pyramid_budgets(2048, 32, compat_fallback=True, prompt_len=8000) == formula(2048, 32, P=8000)
    # Ratio mode: the fallback keeps (1 - ratio) of the prompt.
    assert pyramid_budgets(200, 4, compat_fallback=True, prompt_len=1000, fallback_keep_fraction=0.25) == [250] * 4
    # Without a prompt length the fallback cannot be computed.
    with pytest.raises(ValueError, match="prompt_len"):
        pyramid_budgets(512, 32, compat_fallback=True)
    assert pyramid_budgets(2048, 32, compat_fallback=True) == pyramid_budgets(2048, 32)


def test_prompt_length_clamp():
    """max_num >= P - w: the first layer keeps the whole prompt, the average is unchanged."""
    b = pyramid_budgets(1024, 32, prompt_len=1500)
    assert b[0] == 1500 and b[-1] == 64 + 484  # max_num = 1436, min_num = 1920 - 1436
    assert b == formula(1024, 32, P=1500)
    assert all(x >= y for x, y in zip(b, b[1:]))
    assert abs(sum(b) / 32 - 1024) <= 0.5


def test_prompt_not_longer_than_budget_keeps_everything():
    assert pyramid_budgets(512, 8, prompt_len=300) == [300] * 8
    assert pyramid_budgets(512, 8, prompt_len=512) == [512] * 8
    assert pyramid_budgets(512, 8, compat_fallback=True, prompt_len=512) == [512] * 8


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((64, 32), {}, "token_budget must be greater than window"),
        ((128, 0), {}, "num_layers"),
        ((128, 32), {"beta": 0}, "beta"),
        ((128, 32), {"window": 0}, "window"),
        ((128, 32), {"prompt_len": -1}, "prompt_len"),
        ((128.0, 32), {}, "token_budget"),
    ],
)
def test_budget_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        pyramid_budgets(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------- selection


def make_inputs(B=2, H=2, G=3, W=8, S=80, D=16, pads=(0, 0), seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H * G, W, D, generator=g)
    k = torch.randn(B, H, S, D, generator=g)
    valid = torch.ones(B, S, dtype=torch.bool)
    for b, p in enumerate(pads):
        valid[b, :p] = False
    return q, k, valid


@pytest.mark.parametrize("G", [1, 3, 8])
@pytest.mark.parametrize("layer_idx", [0, 3, 7])
def test_select_is_snapkv_with_layer_budget(G, layer_idx):
    W, L, M = 8, 8, 24
    q, k, _ = make_inputs(G=G, W=W, seed=G + layer_idx)
    S = k.shape[2]
    sel = pyramidkv_select(q, k, 0.3, layer_idx=layer_idx, num_layers=L, token_budget=M, window=W, beta=4)
    budget = pyramid_budgets(M, L, window=W, beta=4, prompt_len=S)[layer_idx]
    ref = snapkv_select(q, k, 0.3, token_budget=budget, window=W)
    assert sel.lengths.tolist() == [budget, budget]
    assert torch.equal(sel.indices, ref.indices)


def test_select_padded_rows_use_their_own_prompt_length():
    W, L, M, pads = 8, 6, 30, (0, 35)
    q, k, valid = make_inputs(G=2, W=W, S=80, pads=pads, seed=21)
    for layer in range(L):
        sel = pyramidkv_select(q, k, 0.3, valid, layer_idx=layer, num_layers=L, token_budget=M, window=W, beta=3)
        for b, p in enumerate(pads):
            n = 80 - p
            budget = min(n, pyramid_budgets(M, L, window=W, beta=3, prompt_len=n)[layer])
            alone = snapkv_select(q[b : b + 1], k[b : b + 1, :, p:], 0.3, token_budget=budget, window=W)
            assert int(sel.lengths[b]) == budget
            assert torch.equal(sel.indices[b, :, :budget], alone.indices[0] + p)


def test_budgets_fall_with_depth_in_selection():
    q, k, _ = make_inputs(S=200, seed=22)
    lengths = [
        int(pyramidkv_select(q, k, 0.3, layer_idx=i, num_layers=4, token_budget=60, window=8).lengths[0])
        for i in range(4)
    ]
    assert lengths == pyramid_budgets(60, 4, window=8, prompt_len=200)
    assert lengths[0] > lengths[-1]


def test_select_ratio_mode():
    W, L, r = 8, 4, 0.6
    q, k, valid = make_inputs(W=W, S=100, pads=(0, 20), seed=23)
    for layer in range(L):
        sel = pyramidkv_select(q, k, 0.3, valid, layer_idx=layer, num_layers=L, token_ratio=r, window=W)
        want = [pyramid_budgets(int((1 - r) * n), L, window=W, prompt_len=n)[layer] for n in (100, 80)]
        assert sel.lengths.tolist() == want
    # A ratio leaving no more than the window keeps exactly the window.
    sel = pyramidkv_select(q, k, 0.3, valid, layer_idx=0, num_layers=L, token_ratio=0.95, window=W)
    assert sel.lengths.tolist() == [W, W]
    assert sel.indices[:, :, :W].tolist() == [[list(range(92, 100))] * 2] * 2


def test_select_compat_fallback():
    W, L = 8, 4
    q, k, valid = make_inputs(W=W, S=100, pads=(0, 10), seed=24)
    sel = pyramidkv_select(
        q, k, 0.3, valid, layer_idx=2, num_layers=L, token_budget=40, window=W, compat_fallback=True
    )
    assert sel.lengths.tolist() == [90, 81]  # round(0.9 * n); min_num = 32/20 < 8
    sel = pyramidkv_select(q, k, 0.3, valid, layer_idx=2, num_layers=L, token_budget=40, window=W)
    assert sel.lengths.tolist() == [pyramid_budgets(40, L, window=W, prompt_len=n)[2] for n in (100, 90)]


def test_select_budget_above_prompt_keeps_all():
    q, k, valid = make_inputs(W=8, S=50, pads=(0, 7), seed=25)
    sel = pyramidkv_select(q, k, 0.3, valid, layer_idx=0, num_layers=3, token_budget=64, window=8)
    assert sel.lengths.tolist() == [50, 43]
    assert sel.indices[1, 0, :43].tolist() == list(range(7, 50))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layer_idx": 4, "num_layers": 4, "token_budget": 20}, "layer_idx"),
        ({"layer_idx": -1, "num_layers": 4, "token_budget": 20}, "layer_idx"),
        ({"layer_idx": 0, "num_layers": 4, "token_budget": 8}, "greater than window"),
        ({"layer_idx": 0, "num_layers": 4}, "exactly one"),
        ({"layer_idx": 0, "num_layers": 0, "token_budget": 20}, "num_layers"),
        ({"layer_idx": 0, "num_layers": 4, "token_budget": 20, "beta": 0}, "beta"),
    ],
)
def test_select_errors(kwargs, match):
    q, k, _ = make_inputs()
    with pytest.raises(ValueError, match=match):
        pyramidkv_select(q, k, 0.3, window=8, **kwargs)
