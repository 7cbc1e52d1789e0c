"""SnapKV scores and selection against a loop-by-loop float64 reference."""

from __future__ import annotations

import math

import pytest
import torch

import sparkv.methods.snapkv as snapkv_mod
from sparkv.methods.snapkv import snapkv_scores, snapkv_select


def make_inputs(B=2, H=2, G=3, W=8, S=45, D=16, pads=(0, 0), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H * G, W, D, generator=g).to(dtype)
    k = torch.randn(B, H, S, D, generator=g).to(dtype)
    valid = torch.ones(B, S, dtype=torch.bool)
    for b, p in enumerate(pads):
        valid[b, :p] = False
    return q, k, valid


def naive_scores(q, k, scaling, valid, kernel_size=5):
    """Direct transcription of the definition, float64, explicit loops."""
    B, HQ, W, D = q.shape
    _, H, S, _ = k.shape
    G, L = HQ // H, S - W
    q, k = q.double(), k.double()
    out = torch.zeros(B, H, L, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            acc = torch.zeros(L, dtype=torch.float64)
            for g in range(G):
                votes = torch.zeros(L, dtype=torch.float64)
                n_q = 0
                for i in range(W):
                    pos = L + i
                    if not valid[b, pos]:
                        continue
                    n_q += 1
                    allowed = [t for t in range(pos + 1) if valid[b, t]]
                    logits = torch.stack([q[b, h * G + g, i] @ k[b, h, t] for t in allowed]) * scaling
                    p = torch.softmax(logits, dim=0)
                    for t, pt in zip(allowed, p):
                        if t < L:
                            votes[t] += pt
                acc += votes / max(n_q, 1)
            acc /= G
            r = kernel_size // 2
            for t in range(L):
                out[b, h, t] = sum(acc[u] for u in range(t - r, t + r + 1) if 0 <= u < L) / kernel_size
    return out


def naive_select(scores, valid, W, keep):
    """Kept positions per (b, h) as sorted Python lists."""
    B, H, L = scores.shape
    S = L + W
    result = []
    for b in range(B):
        rows = []
        vpos = [t for t in range(S) if valid[b, t]]
        k = keep[b]
        for h in range(H):
            if k >= len(vpos):
                rows.append(vpos)
                continue
            cand = sorted((t for t in vpos if t < L), key=lambda t: (-float(scores[b, h, t]), t))
            rows.append(sorted(list(range(L, S)) + cand[: k - W]))
        result.append(rows)
    return result


def check_selection(sel, expected, S):
    B, H, N = sel.indices.shape
    assert sel.indices.dtype == torch.long and sel.lengths.dtype == torch.long
    assert N == max(len(expected[b][0]) for b in range(B))
    for b in range(B):
        n = len(expected[b][0])
        assert int(sel.lengths[b]) == n
        for h in range(H):
            row = sel.indices[b, h].tolist()
            assert row[:n] == expected[b][h]
            pad = row[n:]
            assert pad == sorted(set(range(S)) - set(expected[b][h]))[: N - n]


@pytest.mark.parametrize("G", [1, 3, 8])
@pytest.mark.parametrize("pads", [(0, 0), (0, 7), (11, 3)], ids=["nopad", "pad7", "pad11-3"])
def test_scores_match_naive(G, pads):
    q, k, valid = make_inputs(G=G, pads=pads, seed=G)
    scaling = 0.3
    got = snapkv_scores(q, k, scaling, valid)
    ref = naive_scores(q, k, scaling, valid)
    assert got.dtype == torch.float32 and got.shape == (2, 2, 45 - 8)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("G", [1, 3, 8])
@pytest.mark.parametrize("pads", [(0, 0), (9, 0)], ids=["nopad", "pad9"])
@pytest.mark.parametrize("mode", [("budget", 20), ("budget", 9), ("ratio", 0.5), ("ratio", 0.9)])
def test_select_matches_naive(G, pads, mode):
    q, k, valid = make_inputs(G=G, pads=pads, seed=10 + G)
    W, S = 8, 45
    kind, value = mode
    kw = {"token_budget": value} if kind == "budget" else {"token_ratio": value}
    sel = snapkv_select(q, k, 0.25, valid, window=W, **kw)
    n = valid.sum(-1).tolist()
    if kind == "budget":
        keep = [min(value, nb) for nb in n]
    else:
        keep = [max(int((1 - value) * nb), min(W, nb)) for nb in n]
    ref_scores = naive_scores(q, k, 0.25, valid)
    check_selection(sel, naive_select(ref_scores, valid, W, keep), S)


def test_padded_row_equals_unpadded_row():
    """Left padding changes nothing for the valid tokens: same scores, same selection shifted by the padding."""
    G, W, S, pad = 3, 8, 50, 13
    q, k, valid = make_inputs(B=2, G=G, W=W, S=S, pads=(0, pad), seed=3)
    scores = snapkv_scores(q, k, 0.2, valid)
    alone = snapkv_scores(q[1:], k[1:, :, pad:], 0.2)
    torch.testing.assert_close(scores[1, :, pad:], alone[0], rtol=1e-5, atol=1e-8)
    sel = snapkv_select(q, k, 0.2, valid, token_budget=17, window=W)
    sel_alone = snapkv_select(q[1:], k[1:, :, pad:], 0.2, token_budget=17, window=W)
    assert int(sel.lengths[1]) == int(sel_alone.lengths[0]) == 17
    assert torch.equal(sel.indices[1, :, :17], sel_alone.indices[0] + pad)


@pytest.mark.parametrize("pads", [(0, 0), (5, 0)])
def test_budget_at_least_valid_keeps_everything(pads):
    q, k, valid = make_inputs(pads=pads)
    S = k.shape[2]
    for budget in (S, S + 100):
        sel = snapkv_select(q, k, 0.25, valid, token_budget=budget, window=8)
        n = valid.sum(-1)
        assert torch.equal(sel.lengths, n)
        for b in range(2):
            want = torch.nonzero(valid[b]).flatten()
            assert torch.equal(sel.indices[b, :, : int(n[b])], want.expand(2, -1))
    sel = snapkv_select(q, k, 0.25, valid, token_ratio=0.0, window=8)
    assert torch.equal(sel.lengths, valid.sum(-1))


def test_window_always_kept_and_kept_have_top_scores():
    q, k, valid = make_inputs(B=2, H=3, G=3, W=8, S=60, pads=(0, 6), seed=5)
    # Make the window keys unattractive: the window must still be kept.
    k[:, :, -8:] *= -50
    W, S, budget = 8, 60, 20
    sel = snapkv_select(q, k, 0.5, valid, token_budget=budget, window=W)
    scores = snapkv_scores(q, k, 0.5, valid)
    for b in range(2):
        for h in range(3):
            kept = set(sel.indices[b, h, :budget].tolist())
            assert set(range(S - W, S)) <= kept
            cand = [t for t in range(S - W) if valid[b, t]]
            kept_c = [t for t in cand if t in kept]
            dropped = [t for t in cand if t not in kept]
            assert len(kept_c) == budget - W
            assert min(scores[b, h, kept_c]) >= max(scores[b, h, dropped])
            assert all(valid[b, t] for t in kept)


def test_ties_break_towards_lower_position():
    """Zero queries give uniform attention: all interior non-window scores tie exactly."""
    W, S, budget = 8, 40, 14
    q = torch.zeros(1, 2, W, 16)
    k = torch.randn(1, 2, S, 16, generator=torch.Generator().manual_seed(1))
    scores = snapkv_scores(q, k, 1.0)
    L = S - W
    assert torch.all(scores[..., 2 : L - 2] == scores[..., 2:3])
    assert torch.all(scores[..., :2] < scores[..., 2:3]) and torch.all(scores[..., L - 2 :] < scores[..., 2:3])
    sel = snapkv_select(q, k, 1.0, token_budget=budget, window=W)
    want = list(range(2, 2 + budget - W)) + list(range(L, S))
    assert sel.indices[0].tolist() == [want, want]


def test_padding_never_chosen_before_valid():
    """Padding keys next to valid ones get non-zero pooled scores; they must still never be kept."""
    W, S = 4, 30
    q, k, valid = make_inputs(B=1, H=1, G=1, W=W, S=S, pads=(10,), seed=2)
    # Make the first valid tokens dominate so their pooled neighbours (padding) score high.
    k[0, 0, 10:12] = q[0, 0].mean(0) * 20
    scores = snapkv_scores(q, k, 1.0, valid)
    assert scores[0, 0, 8:10].max() > scores[0, 0, 14:S - W].max()
    sel = snapkv_select(q, k, 1.0, valid, token_budget=12, window=W)
    assert all(t >= 10 for t in sel.indices[0, 0, :12].tolist())


def test_row_shorter_than_window():
    """A row whose valid tokens all lie inside the window keeps them all; no NaN anywhere."""
    W, S = 8, 20
    q, k, valid = make_inputs(B=2, H=2, G=2, W=W, S=S, pads=(0, 15), seed=4)
    scores = snapkv_scores(q, k, 0.3, valid)
    assert torch.isfinite(scores).all()
    torch.testing.assert_close(scores[1], torch.zeros_like(scores[1]))  # no valid window query votes
    sel = snapkv_select(q, k, 0.3, valid, token_budget=12, window=W)
    assert sel.lengths.tolist() == [12, 5]
    assert sel.indices[1, :, :5].tolist() == [list(range(15, 20))] * 2


def test_prompt_shorter_than_window_parameter():
    q, k, _ = make_inputs(B=1, H=2, G=2, W=10, S=10, pads=(0,), seed=6)
    sel = snapkv_select(q, k, 0.3, token_budget=65, window=64)
    assert sel.lengths.tolist() == [10] and sel.indices[0, 0].tolist() == list(range(10))
    assert snapkv_scores(q, k, 0.3).shape == (1, 2, 0)


def test_extra_window_queries_are_ignored_and_scaling_default():
    q, k, valid = make_inputs(W=12, seed=7)
    a = snapkv_select(q, k, None, valid, token_budget=20, window=8)
    b = snapkv_select(q[:, :, -8:], k, q.shape[-1] ** -0.5, valid, token_budget=20, window=8)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.lengths, b.lengths)


def test_head_chunking_matches(monkeypatch):
    q, k, valid = make_inputs(H=4, G=2, pads=(0, 3), seed=8)
    full = snapkv_scores(q, k, 0.3, valid)
    monkeypatch.setattr(snapkv_mod, "_CHUNK_BYTES", 1)
    chunked = snapkv_scores(q, k, 0.3, valid)
    torch.testing.assert_close(full, chunked, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_score_in_float32(dtype):
    q, k, valid = make_inputs(pads=(0, 4), seed=9, dtype=dtype)
    got = snapkv_scores(q, k, 0.25, valid)
    assert got.dtype == torch.float32
    ref = snapkv_scores(q.float(), k.float(), 0.25, valid)
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    sel = snapkv_select(q, k, 0.25, valid, token_budget=16, window=8)
    assert sel.indices.shape == (2, 2, 16) and sel.indices.dtype == torch.long


def test_kernel_size_one_is_no_pooling():
    q, k, valid = make_inputs(G=2, seed=11)
    got = snapkv_scores(q, k, 0.3, valid, kernel_size=1)
    torch.testing.assert_close(got.double(), naive_scores(q, k, 0.3, valid, kernel_size=1), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"token_budget": 8}, "token_budget must be greater than window"),
        ({"token_budget": 20, "token_ratio": 0.5}, "exactly one"),
        ({}, "exactly one"),
        ({"token_ratio": 1.0}, "token_ratio"),
        ({"token_ratio": -0.1}, "token_ratio"),
        ({"token_budget": 2.5}, "token_budget"),
        ({"token_budget": 20, "kernel_size": 4}, "kernel_size"),
        ({"token_budget": 20, "window": 0}, "window"),
        ({"token_budget": 20, "window": 9}, "at least"),
    ],
)
def test_select_errors(kwargs, match):
    q, k, valid = make_inputs()
    kwargs.setdefault("window", 8)
    with pytest.raises(ValueError, match=match):
        snapkv_select(q, k, 0.3, valid, **kwargs)


def test_shape_errors():
    q, k, valid = make_inputs(H=2, G=3)
    with pytest.raises(ValueError, match="multiple"):
        snapkv_scores(q[:, :5], k, 0.3)
    with pytest.raises(ValueError, match="agree"):
        snapkv_scores(q[..., :8], k, 0.3)
    with pytest.raises(ValueError, match="valid_mask"):
        snapkv_scores(q, k, 0.3, valid[:, 1:])
    with pytest.raises(ValueError, match="bool"):
        snapkv_scores(q, k, 0.3, valid.long())
    with pytest.raises(ValueError, match="window_queries"):
        snapkv_scores(q[0], k, 0.3)
    with pytest.raises(ValueError, match="longer"):
        snapkv_scores(q, k[:, :, :5], 0.3)


def test_math_sanity_single_query_no_pooling():
    """One query, one head: scores are the softmax itself over the non-window keys."""
    q = torch.randn(1, 1, 1, 8, generator=torch.Generator().manual_seed(12))
    k = torch.randn(1, 1, 6, 8, generator=torch.Generator().manual_seed(13))
    s = snapkv_scores(q, k, 1 / math.sqrt(8), kernel_size=1)
    ref = torch.softmax((q[0, 0] @ k[0, 0].T) / math.sqrt(8), dim=-1)[0, :5]
    torch.testing.assert_close(s[0, 0], ref)
