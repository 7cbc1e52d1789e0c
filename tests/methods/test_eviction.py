"""TokenSelection, gather_tokens and the select_tokens dispatcher, over every eviction method."""

from __future__ import annotations

import pytest
import torch

from sparkv.config import EvictionConfig
from sparkv.methods.eviction import TokenSelection, gather_tokens, select_tokens
from sparkv.methods.pyramidkv import pyramidkv_select
from sparkv.methods.snapkv import snapkv_select
from sparkv.methods.streaming import streaming_select

# Methods matrix, easy -> hard.
CONFIGS = [
    EvictionConfig(method="snapkv", token_budget=200, window=8),
    EvictionConfig(method="snapkv", token_budget=20, window=8),
    EvictionConfig(method="snapkv", token_ratio=0.7, window=8, kernel_size=3),
    EvictionConfig(method="pyramidkv", token_budget=24, window=8, pyramid_beta=4),
    EvictionConfig(method="pyramidkv", token_ratio=0.5, window=8),
    EvictionConfig(method="pyramidkv", token_budget=24, window=8, pyramid_fallback_compat=True),
    EvictionConfig(method="streamingllm", token_budget=16, sink_tokens=4),
    EvictionConfig(method="streamingllm", token_ratio=0.8, sink_tokens=0),
]
IDS = [f"{c.method}-{c.token_budget or c.token_ratio}" for c in CONFIGS]


def make(B=3, H=2, G=3, W=8, S=70, D=16, pads=(0, 13, 60), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H * G, W, D, generator=g).to(dtype)
    k = torch.randn(B, H, S, D, generator=g).to(dtype)
    valid = torch.ones(B, S, dtype=torch.bool)
    for b, p in enumerate(pads):
        valid[b, :p] = False
    return q, k, valid


def direct(cfg, q, k, valid, scaling, layer_idx, num_layers):
    common = {"token_budget": cfg.token_budget, "token_ratio": cfg.token_ratio}
    if cfg.method == "snapkv":
        return snapkv_select(q, k, scaling, valid, window=cfg.window, kernel_size=cfg.kernel_size, **common)
    if cfg.method == "pyramidkv":
        return pyramidkv_select(
            q, k, scaling, valid, layer_idx=layer_idx, num_layers=num_layers, window=cfg.window,
            kernel_size=cfg.kernel_size, beta=cfg.pyramid_beta, compat_fallback=cfg.pyramid_fallback_compat, **common,
        )
    return streaming_select(k, valid, sink_tokens=cfg.sink_tokens, **common)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("layer_idx", [0, 5])
def test_dispatch_matches_direct_call(cfg, layer_idx):
    q, k, valid = make(seed=layer_idx)
    got = select_tokens(cfg, q, k, valid, 0.25, layer_idx, 6)
    want = direct(cfg, q, k, valid, 0.25, layer_idx, 6)
    assert torch.equal(got.indices, want.indices) and torch.equal(got.lengths, want.lengths)


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("G", [1, 3, 8])
def test_selection_invariants(cfg, G):
    q, k, valid = make(G=G, seed=G, dtype=torch.bfloat16)
    B, H, S = 3, 2, 70
    sel = select_tokens(cfg, q, k, valid, None, 2, 6)
    assert isinstance(sel, TokenSelection)
    assert sel.indices.dtype == torch.long and sel.lengths.dtype == torch.long
    assert sel.indices.shape == (B, H, int(sel.lengths.max())) and sel.num_tokens == sel.indices.shape[-1]
    n_valid = valid.sum(-1)
    assert torch.all(sel.lengths <= n_valid) and torch.all(sel.lengths >= 1)
    mask = sel.valid_mask()
    assert mask.shape == (B, sel.num_tokens) and torch.equal(mask.sum(-1), sel.lengths)
    for b in range(B):
        n = int(sel.lengths[b])
        for h in range(H):
            row = sel.indices[b, h].tolist()
            kept, pad = row[:n], row[n:]
            assert kept == sorted(kept) and len(set(row)) == len(row)  # ascending, distinct
            assert all(valid[b, t] for t in kept)  # padding never kept
            assert pad == sorted(set(range(S)) - set(kept))[: len(pad)]
            assert kept[-1] == S - 1  # the last prompt token always survives
        if cfg.method != "pyramidkv" and cfg.token_budget is not None:
            assert n == min(cfg.token_budget, int(n_valid[b]))


def test_window_kept_by_score_based_methods():
    q, k, valid = make(seed=3)
    for cfg in CONFIGS[:6]:
        sel = select_tokens(cfg, q, k, valid, 0.25, 1, 6)
        for b in range(3):
            n = int(sel.lengths[b])
            for h in range(2):
                assert set(range(70 - cfg.window, 70)) <= set(sel.indices[b, h, :n].tolist())


def test_streaming_needs_no_queries():
    _, k, valid = make()
    cfg = CONFIGS[6]
    sel = select_tokens(cfg, None, k, valid, None, 0, 1)
    assert torch.equal(sel.indices, streaming_select(k, valid, token_budget=16).indices)
    with pytest.raises(ValueError, match="window_queries"):
        select_tokens(CONFIGS[1], None, k, valid, None, 0, 1)


def test_gather_tokens_matches_loop():
    _, k, valid = make(dtype=torch.bfloat16)
    sel = select_tokens(CONFIGS[6], None, k, valid, None, 0, 1)
    out = gather_tokens(k, sel)
    assert out.dtype == k.dtype and out.shape == (3, 2, sel.num_tokens, 16)
    for b in range(3):
        for h in range(2):
            for n, t in enumerate(sel.indices[b, h].tolist()):
                assert torch.equal(out[b, h, n], k[b, h, t])
    with pytest.raises(ValueError, match="x must be"):
        gather_tokens(k[0], sel)
    with pytest.raises(ValueError, match="selection.indices"):
        gather_tokens(k[:, :1], sel)


def test_unknown_method_rejected():
    q, k, valid = make()
    cfg = EvictionConfig(method="snapkv", token_budget=20, window=8)
    object.__setattr__(cfg, "method", "h2o")
    with pytest.raises(ValueError, match="eviction method"):
        select_tokens(cfg, q, k, valid, None, 0, 1)
