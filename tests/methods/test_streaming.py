"""StreamingLLM: sinks + recent tokens, against a list-based reference."""

from __future__ import annotations

import pytest
import torch

from sparkv.methods.streaming import streaming_select


def naive(valid, keep, sink):
    out = []
    for b in range(valid.shape[0]):
        v = torch.nonzero(valid[b]).flatten().tolist()
        k = keep[b]
        out.append(v if k >= len(v) else v[:sink] + v[len(v) - (k - sink) :])
    return out


def make(B=3, H=2, S=40, D=8, pads=(0, 9, 30), seed=0):
    k = torch.randn(B, H, S, D, generator=torch.Generator().manual_seed(seed))
    valid = torch.ones(B, S, dtype=torch.bool)
    for b, p in enumerate(pads):
        valid[b, :p] = False
    return k, valid


@pytest.mark.parametrize("sink", [0, 1, 4])
@pytest.mark.parametrize("mode", [("budget", 12), ("budget", 100), ("ratio", 0.5), ("ratio", 0.99), ("ratio", 0.0)])
def test_matches_naive(sink, mode):
    k, valid = make()
    kind, value = mode
    kw = {"token_budget": value} if kind == "budget" else {"token_ratio": value}
    sel = streaming_select(k, valid, sink_tokens=sink, **kw)
    n = valid.sum(-1).tolist()
    if kind == "budget":
        keep = [min(value, x) for x in n]
    else:
        keep = [max(int((1 - value) * x), min(sink + 1, x)) for x in n]
    want = naive(valid, keep, sink)
    assert sel.lengths.tolist() == keep
    assert sel.indices.shape == (3, 2, max(keep)) and sel.indices.dtype == torch.long
    S = k.shape[2]
    for b in range(3):
        for h in range(2):
            row = sel.indices[b, h].tolist()
            assert row[: keep[b]] == want[b]
            assert row[keep[b] :] == sorted(set(range(S)) - set(want[b]))[: max(keep) - keep[b]]


def test_sinks_count_from_first_valid_token():
    k, valid = make(B=1, pads=(10,))
    sel = streaming_select(k, valid, token_budget=8, sink_tokens=4)
    assert sel.indices[0, 0].tolist() == [10, 11, 12, 13, 36, 37, 38, 39]


def test_no_padding_and_no_mask():
    k, _ = make(B=2, pads=(0, 0))
    a = streaming_select(k, None, token_budget=10)
    assert a.indices[0, 0].tolist() == [0, 1, 2, 3] + list(range(34, 40))
    assert torch.equal(a.indices[0], a.indices[1])  # same for every row and head


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"token_budget": 4}, "greater than sink_tokens"),
        ({"token_budget": 10, "token_ratio": 0.5}, "exactly one"),
        ({}, "exactly one"),
        ({"token_ratio": 1.5}, "token_ratio"),
        ({"token_budget": 10, "sink_tokens": -1}, "sink_tokens"),
    ],
)
def test_errors(kwargs, match):
    k, valid = make()
    with pytest.raises(ValueError, match=match):
        streaming_select(k, valid, **kwargs)
    with pytest.raises(ValueError, match="keys"):
        streaming_select(k[0], token_budget=10)
