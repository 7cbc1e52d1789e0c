"""ThinK channel scores and structured selection (spec §5)."""

from __future__ import annotations

import pytest
import torch

import sparkv.methods.think as think_mod
from sparkv.config import kept_channels
from sparkv.methods.think import think_channel_scores, think_select_channels


def make(B=2, H=2, G=3, W=8, S=30, D=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H * G, W, D, generator=g).to(dtype)
    k = torch.randn(B, H, S, D, generator=g).to(dtype)
    return q, k


def naive_scores(q, k, key_valid, query_valid):
    B, HQ, W, D = q.shape
    H = k.shape[1]
    G = HQ // H
    out = torch.zeros(B, H, D, dtype=torch.float64)
    for b in range(B):
        qs = [w for w in range(W) if query_valid[b][w]]
        ts = [t for t in range(k.shape[2]) if key_valid[b][t]]
        for h in range(H):
            for j in range(D):
                qt = sum(float(q[b, h * G + g, w, j]) ** 2 for g in range(G) for w in qs) / (G * max(len(qs), 1))
                kt = sum(float(k[b, h, t, j]) ** 2 for t in ts) / max(len(ts), 1)
                out[b, h, j] = qt * kt
    return out


@pytest.mark.parametrize("G", [1, 3, 8])
def test_scores_match_naive(G):
    q, k = make(G=G, seed=G)
    got = think_channel_scores(q, k)
    assert got.shape == (2, 2, 16) and got.dtype == torch.float32
    ones = [[True] * 30] * 2
    torch.testing.assert_close(got.double(), naive_scores(q, k, ones, [[True] * 8] * 2), rtol=1e-5, atol=1e-8)


def test_valid_mask_left_padding_and_padded_queries():
    """Row 1 has 25 padding tokens: 5 valid tokens, so 3 of the 8 window queries are padding too."""
    q, k = make(G=3, seed=4)
    valid = torch.ones(2, 30, dtype=torch.bool)
    valid[0, :4] = False
    valid[1, :25] = False
    got = think_channel_scores(q, k, valid)
    qv = valid[:, -8:].tolist()
    torch.testing.assert_close(got.double(), naive_scores(q, k, valid.tolist(), qv), rtol=1e-5, atol=1e-8)
    # Same as dropping the padding explicitly.
    alone = think_channel_scores(q[:1], k[:1, :, 4:])
    torch.testing.assert_close(got[:1], alone)


def test_lengths_equal_slicing():
    q, k = make(G=2, seed=5)
    lengths = torch.tensor([30, 11])
    got = think_channel_scores(q, k, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[b], think_channel_scores(q[b : b + 1], k[b : b + 1, :, :n])[0])
    zero = think_channel_scores(q, k, lengths=torch.tensor([0, 3]))
    assert torch.equal(zero[0], torch.zeros_like(zero[0]))


def test_window_uses_last_queries():
    q, k = make(W=12, seed=6)
    torch.testing.assert_close(think_channel_scores(q, k, window=5), think_channel_scores(q[:, :, -5:], k))


def test_low_precision_inputs_score_in_float32():
    q, k = make(seed=7, dtype=torch.bfloat16)
    got = think_channel_scores(q, k)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, think_channel_scores(q.float(), k.float()))


@pytest.mark.parametrize("D, ratio", [(64, 0.5), (64, 0.8), (128, 0.5), (128, 0.8), (256, 0.5)])
def test_select_keeps_top_channels_in_ascending_order(D, ratio):
    q, k = make(D=D, seed=D)
    scores = think_channel_scores(q, k)
    kept = kept_channels(D, ratio)
    ch = think_select_channels(scores, kept)
    assert ch.shape == (2, 2, kept) and ch.dtype == torch.long
    assert torch.all(ch[..., 1:] > ch[..., :-1])
    for b in range(2):
        for h in range(2):
            want = sorted(sorted(range(D), key=lambda j: (-float(scores[b, h, j]), j))[:kept])
            assert ch[b, h].tolist() == want
            dropped = [j for j in range(D) if j not in set(want)]
            assert scores[b, h, want].min() >= scores[b, h, dropped].max()
    assert D - kept == int(ratio * D + 1e-9)  # floor(λ·D) pruned


def test_select_ties_keep_lower_channel():
    scores = torch.tensor([[[1.0, 2.0, 2.0, 0.5, 2.0, 2.0]]])
    assert think_select_channels(scores, 3).tolist() == [[[1, 2, 4]]]
    assert think_select_channels(torch.zeros(1, 1, 8), 3).tolist() == [[[0, 1, 2]]]
    assert think_select_channels(scores, 6).tolist() == [[list(range(6))]]


def test_errors():
    q, k = make()
    with pytest.raises(ValueError, match="kept"):
        think_select_channels(torch.zeros(1, 1, 8), 0)
    with pytest.raises(ValueError, match="kept"):
        think_select_channels(torch.zeros(1, 1, 8), 9)
    with pytest.raises(ValueError, match="scores"):
        think_select_channels(torch.zeros(8), 3)
    with pytest.raises(ValueError, match="at most one"):
        think_channel_scores(q, k, torch.ones(2, 30, dtype=torch.bool), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="multiple"):
        think_channel_scores(q[:, :5], k)
    with pytest.raises(ValueError, match="agree"):
        think_channel_scores(q, k[..., :8])
    with pytest.raises(ValueError, match="lengths"):
        think_channel_scores(q, k, lengths=torch.tensor([31, 2]))
    with pytest.raises(ValueError, match="window"):
        think_channel_scores(q, k, window=9)


def test_documents_limitations():
    doc = think_mod.__doc__
    assert "Limitations" in doc and "No recovery" in doc and "Structured" in doc
