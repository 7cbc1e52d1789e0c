"""PressedLayer / DenseSlidingLayer / build_cache: the transformers cache side of sparkv, without a model."""

from __future__ import annotations

import types

import pytest
import torch
from transformers.cache_utils import Cache, DynamicSlidingWindowLayer

from sparkv.cache.build import build_cache, fork_cache, layer_types
from sparkv.cache.layer import AttentionHandle, DenseSlidingLayer, PressedLayer
from sparkv.config import PressConfig, SparKConfig
from sparkv.kernels.recover.reference import recover_ref
from sparkv.memory import memory_report
from sparkv.methods.compose import compress_layer
from tests.utils import gemma3_config, llama_config, mistral_config

SPARKV_CONFIG = types.SimpleNamespace(_attn_implementation="sparkv")


def press(ratio=0.5, window=8):
    return PressConfig(channels=SparKConfig(channel_prune_ratio=ratio, window=window), backend="torch")


def kv(B=2, H=2, S=20, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, S, D, generator=g), torch.randn(B, H, S, D, generator=g)


def prefilled(p=None, S=20, **kw):
    layer = PressedLayer(p or press(), 0, 2, config=SPARKV_CONFIG, **kw)
    k, v = kv(S=S)
    q = torch.randn(2, 4, S, 16)
    handle, same = layer.update(k, v)
    assert isinstance(handle, AttentionHandle) and handle is same and handle.layer is layer
    assert layer.pending and layer.keys is k
    layer.finish_prefill(q, None, 0.25)
    return layer, q, k, v


def test_prefill_compresses_and_frees_the_dense_prompt():
    layer, q, k, v = prefilled()
    assert not layer.pending and layer.keys is None and layer.values is None
    ref = compress_layer(press(), q[:, :, -8:], k, v, None, 0.25, 0, 2)
    torch.testing.assert_close(recover_ref(layer.prefix.keys), recover_ref(ref.keys), rtol=0, atol=0)
    assert layer.get_seq_length() == 20 and layer.get_mask_sizes(1) == (21, 0)


def test_padding_mask_from_4d_mask():
    layer = PressedLayer(PressConfig(backend="torch"), 0, 1, config=SPARKV_CONFIG)
    k, v = kv(S=10)
    layer.update(k, v)
    mask = torch.ones(2, 1, 10, 10, dtype=torch.bool).tril()
    mask[0, :, :, :3] = False  # row 0: 3 left-padding tokens
    layer.finish_prefill(torch.randn(2, 4, 10, 16), mask, 0.25)
    assert layer.prefix.lengths.tolist() == [7, 10]
    torch.testing.assert_close(layer.prefix.values[0, :, :7], v[0, :, 3:], rtol=0, atol=0)
    # Additive float masks (eager style) work the same.
    layer2 = PressedLayer(PressConfig(backend="torch"), 0, 1, config=SPARKV_CONFIG)
    layer2.update(k, v)
    fmask = torch.where(mask, 0.0, torch.finfo(torch.float32).min)
    layer2.finish_prefill(torch.randn(2, 4, 10, 16), fmask, 0.25)
    assert layer2.prefix.lengths.tolist() == [7, 10]


def test_tail_grows_by_chunks_and_keeps_logical_length():
    layer, *_ = prefilled(tail_chunk=4)
    written_k, written_v = [], []
    for step in range(9):
        k, v = kv(S=1, seed=100 + step)
        written_k.append(k)
        written_v.append(v)
        assert layer.update(k, v)[0].layer is layer
        assert layer.get_seq_length() == 20 + step + 1
        assert layer.tail_keys.shape[-2] == 4 * ((step + 1 + 3) // 4)  # capacity: whole chunks
    tk, tv = layer.tail()
    torch.testing.assert_close(tk, torch.cat(written_k, 2), rtol=0, atol=0)
    torch.testing.assert_close(tv, torch.cat(written_v, 2), rtol=0, atol=0)
    # A multi-token update (e.g. a continuation) lands in the tail too.
    k, v = kv(S=5, seed=7)
    layer.update(k, v)
    assert layer.tail_len == 14 and layer.tail_keys.shape[-2] == 16
    assert layer.tail_reserved_bytes() == 2 * (2 * 2 * 2 * 16 * 4)  # 2 free slots, K and V, B=2, H=2, D=16, fp32


def test_update_refuses_other_attention_implementations():
    layer = PressedLayer(press(), 0, 1, config=types.SimpleNamespace(_attn_implementation="sdpa"))
    k, v = kv()
    with pytest.raises(RuntimeError, match="sparkv"):
        layer.update(k, v)


@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_chunked_prefill_compresses_as_one_prefill(spec):
    """expect_prefill: chunks of keys accumulate, the window is the last queries across chunks (here the last chunk
    alone is shorter than the window), and the compressed layer equals a one-shot prefill's exactly."""
    from sparkv.config import parse_press

    p = parse_press(spec, key_ratio=0.5, token_ratio=0.4, backend="torch")
    g = torch.Generator().manual_seed(3)
    k, v, q = torch.randn(2, 2, 90, 16, generator=g), torch.randn(2, 2, 90, 16, generator=g), \
        torch.randn(2, 4, 90, 16, generator=g)
    mask = torch.ones(2, 1, 90, 90, dtype=torch.bool).tril()
    mask[1, :, :, :7] = False
    one = PressedLayer(p, 1, 2, config=SPARKV_CONFIG)
    one.update(k, v)
    one.finish_prefill(q, mask, 0.25)
    chunked = PressedLayer(p, 1, 2, config=SPARKV_CONFIG)
    chunked.expect_prefill(90)
    for start, end in ((0, 40), (40, 85), (85, 90)):
        chunked.update(k[:, :, start:end], v[:, :, start:end])
        assert chunked.prompt_len == end and chunked.pending
        if start == 0:  # one buffer for the whole prompt, filled chunk by chunk (no copies of earlier chunks)
            room = chunked.keys.untyped_storage().data_ptr()
            assert chunked.keys.untyped_storage().nbytes() == k.untyped_storage().nbytes()
        assert chunked.keys.untyped_storage().data_ptr() == room
        chunked.finish_prefill(q[:, :, start:end], mask[:, :, start:end, :end], 0.25)
        assert (chunked.prefix is None) == (end < 90) and not chunked.pending
    assert chunked.window_queries is None and chunked.keys is None and chunked.prefill_tokens is None
    want, got = _layer_state(one), _layer_state(chunked)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def test_chunked_prefill_arguments_are_checked():
    layer = PressedLayer(press(), 0, 2, config=SPARKV_CONFIG)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="tokens must be an integer >= 1"):
            layer.expect_prefill(bad)
    layer.expect_prefill(10)
    layer.update(*kv(S=6))
    with pytest.raises(RuntimeError, match="needs an empty pressing layer"):
        layer.expect_prefill(10)
    layer.finish_prefill(torch.randn(2, 4, 6, 16), None, 0.25)
    layer.update(*kv(S=4))
    layer.finish_prefill(torch.randn(2, 4, 4, 16), None, 0.25)
    assert layer.prefix is not None and layer.keys is None and layer.prefill_tokens is None


@pytest.mark.parametrize("chunks", [(23,), (12, 11), (20, 3)])
def test_tokens_past_an_announced_prompt_join_the_decode_tail(chunks):
    """expect_prefill(20), then 23 tokens in one forward or in chunks (assisted decoding verifies its first
    candidates in the prompt's forward): the 20 are compressed as one prefill of them, the 3 after are the decode
    tail, as if they had been decoded after the prefill. A whole prompt in one forward is kept without a copy."""
    k, v = kv(S=23)
    q = torch.randn(2, 4, 23, 16, generator=torch.Generator().manual_seed(5))
    one = PressedLayer(press(), 1, 2, config=SPARKV_CONFIG)
    one.update(k[:, :, :20], v[:, :, :20])
    one.finish_prefill(q[:, :, :20], None, 0.25)
    one.update(k[:, :, 20:], v[:, :, 20:])
    layer = PressedLayer(press(), 1, 2, config=SPARKV_CONFIG)
    layer.expect_prefill(20)
    start = 0
    for n in chunks:
        end = start + n
        layer.update(k[:, :, start:end], v[:, :, start:end])
        if start < 20:
            assert layer.prompt_len == min(end, 20) and layer.early_tail_len == max(0, end - 20) and layer.pending
            if n == 23:
                assert layer.keys.data_ptr() == k.data_ptr()
            layer.finish_prefill(q[:, :, start:min(end, 20)], None, 0.25)
        else:  # the prompt was complete: a decode step
            assert not layer.pending and layer.early_tail is None
        start = end
    assert layer.early_tail is None and layer.tail_len == 3 and layer.get_seq_length() == 23
    want, got = _layer_state(one), _layer_state(layer)
    assert want.keys() == got.keys()
    for name in want:  # the tail's keys and values included
        assert torch.equal(got[name], want[name]), name


def test_crop_removes_decode_tail_tokens_only():
    """transformers' crop: negative removes that many, 0 none, positive is the legacy length to keep. Tail tokens go
    (decoding then continues where they were); the compressed prompt cannot be cut."""
    layer, *_ = prefilled()
    for bad in (-1, 5):  # one prompt position; keep 5 of 20
        with pytest.raises(NotImplementedError, match="into its compressed prompt"):
            layer.crop(bad)
    for bad in (1.0, True, torch.tensor(1.0), torch.tensor([1, 2])):
        with pytest.raises(TypeError, match="tokens_to_remove must be an integer"):
            layer.crop(bad)
    layer.crop(0)
    layer.crop(layer.get_seq_length())  # legacy form, removes nothing
    steps = [kv(S=1, seed=10 + i) for i in range(4)]
    for k, v in steps:
        layer.update(k, v)
    layer.crop(torch.tensor(-3))  # assisted decoding passes its count of rejected candidates as a tensor
    assert layer.tail_len == 1 and layer.get_seq_length() == 21
    layer.update(*steps[3])  # the next token lands right after the kept one
    assert torch.equal(layer.tail()[0], torch.cat([steps[0][0], steps[3][0]], 2))
    layer.crop(21)  # legacy: keep 21 tokens
    assert layer.tail_len == 1
    with pytest.raises(NotImplementedError, match="into its compressed prompt"):
        layer.crop(-2)
    assert layer.tail_len == 1
    layer.reset()
    assert layer.get_seq_length() == 0 and layer.prefix is None


def test_recording_layer_forks_into_the_same_compression():
    rec = PressedLayer(None, 0, 2, config=SPARKV_CONFIG, record_window=16)
    k, v = kv(S=20)
    q = torch.randn(2, 4, 20, 16)
    rec.update(k, v)
    rec.finish_prefill(q, None, 0.25)
    assert rec.keys is k and rec.window_queries.shape == (2, 4, 16, 16)
    forked = rec.fork(press())
    direct, *_ = prefilled_with(k, v, q)
    torch.testing.assert_close(recover_ref(forked.prefix.keys), recover_ref(direct.prefix.keys), rtol=0, atol=0)
    assert forked.get_seq_length() == 20 and rec.keys is k  # the recording is untouched
    with pytest.raises(RuntimeError, match="fork"):
        rec.update(*kv(S=1))


def prefilled_with(k, v, q):
    layer = PressedLayer(press(), 0, 2, config=SPARKV_CONFIG)
    layer.update(k, v)
    layer.finish_prefill(q, None, 0.25)
    return layer, q, k, v


def test_dense_sliding_layer_is_compact_and_bounded():
    layer = DenseSlidingLayer(sliding_window=8)
    assert isinstance(layer, DynamicSlidingWindowLayer) and layer.is_sliding
    k, v = kv(S=20)
    full_k, _ = layer.update(k, v)
    assert full_k.shape[-2] == 20 and layer.keys.shape[-2] == 7
    for step in range(3):
        layer.update(*kv(S=1, seed=step))
        for t in (layer.keys, layer.values):
            assert t.shape[-2] == 7 and t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert layer.get_seq_length() == 23
    copy = layer.copy()
    assert copy.keys.data_ptr() != layer.keys.data_ptr()
    torch.testing.assert_close(copy.keys, layer.keys)


def test_build_cache_layer_types():
    cache = build_cache(gemma3_config(), press())
    assert isinstance(cache, Cache)
    kinds = [type(layer).__name__ for layer in cache.layers]
    assert kinds == ["DenseSlidingLayer", "PressedLayer", "DenseSlidingLayer", "PressedLayer"]
    assert cache.is_sliding == [True, False, True, False]
    assert cache.layers[1].layer_idx == 1 and cache.layers[1].num_layers == 4
    llama = build_cache(llama_config(), press())
    assert all(isinstance(layer, PressedLayer) for layer in llama.layers) and len(llama.layers) == 2
    assert llama.get_seq_length() == 0 and not llama.is_compileable


def test_build_cache_rejects_all_sliding_and_unknown_layer_types():
    with pytest.raises(ValueError, match="sliding_window"):
        build_cache(mistral_config(sliding_window=4096), press())
    cfg = llama_config()
    cfg.layer_types = ["full_attention", "linear_attention"]
    with pytest.raises(ValueError, match="linear_attention"):
        layer_types(cfg)


def test_memory_report_counts_every_byte():
    layer, *_ = prefilled(tail_chunk=4)
    for step in range(3):
        layer.update(*kv(S=1, seed=step))
    sliding = DenseSlidingLayer(sliding_window=8)
    sliding.update(*kv(S=20))
    cache = Cache(layers=[layer, sliding])
    rep = memory_report(cache)
    assert rep.compressed_kv_bytes == rep.allocated_kv_bytes
    prefix = layer.prefix.nbytes()
    tail = 2 * (2 * 2 * 4 * 16 * 4)  # K and V buffers of capacity 4
    window = 2 * (2 * 2 * 7 * 16 * 4)
    assert rep.compressed_kv_bytes == prefix + tail + window
    assert rep.dense_kv_bytes == 2 * (2 * 2 * 23 * 16 * 4) + window
    survivors = 2 * 2 * 20 * 16 * 4 * 2  # K+V bytes of the 20 prompt tokens, both rows
    assert rep.nominal_kv_bytes == round(survivors * (1 - 0.5 / 2)) + 2 * (2 * 2 * 3 * 16 * 4) + window
    assert rep.tail_reserved_bytes == 2 * (2 * 2 * 1 * 16 * 4)
    assert rep.peak_gpu_bytes is None and rep.compressed_layers == 1 and rep.num_layers == 2
    assert 0 < rep.compression_ratio and "compressed" in rep.summary() and "per_layer" not in rep.to_dict()


def test_memory_report_of_an_empty_cache_says_so():
    import json

    rep = memory_report(build_cache(llama_config(), press()))
    assert rep.dense_kv_bytes == 0 and rep.summary().startswith("KV cache: empty")
    out = rep.to_dict()
    assert out["compression_ratio"] is None and out["nominal_ratio"] is None
    json.dumps(out, allow_nan=False)  # valid JSON: no NaN


def test_fork_cache_copies_sliding_layers():
    cache = build_cache(gemma3_config(), None, record_window=8)
    cfg = types.SimpleNamespace(_attn_implementation="sparkv")
    for layer in cache.layers:
        if isinstance(layer, PressedLayer):
            layer.config = cfg
            k, v = torch.randn(1, 1, 12, 64), torch.randn(1, 1, 12, 64)
            layer.update(k, v)
            layer.finish_prefill(torch.randn(1, 2, 12, 64), None, 0.125)
        else:
            layer.update(torch.randn(1, 1, 12, 64), torch.randn(1, 1, 12, 64))
    forked = fork_cache(cache, press(window=8))
    assert forked.layers[1].prefix is not None and forked.layers[1].get_seq_length() == 12
    assert forked.layers[0].keys.data_ptr() != cache.layers[0].keys.data_ptr()


def test_layer_arguments_are_checked():
    with pytest.raises(ValueError, match="record_window must be an integer >= 0"):
        PressedLayer(None, 0, 2, record_window=-5)
    with pytest.raises(ValueError, match=r"layer_idx must be in \[0, num_layers = 2\)"):
        PressedLayer(press(), 2, 2)
    layer, *_ = prefilled()
    layer.batch_repeat_interleave(1)  # changes nothing: allowed


def test_refused_batch_operations_leave_a_mixed_cache_untouched():
    """Gemma3-like cache (sliding layer first): a layer whose rows cannot be selected now (a prompt waiting for
    compression) refuses before transformers touches any layer."""
    cache = build_cache(gemma3_config(), press())
    sliding = cache.layers[0]
    k, v = kv(S=6)
    sliding.update(k, v)
    layer = PressedLayer(press(), 1, 2, config=SPARKV_CONFIG)
    layer.update(*kv())
    cache.layers[1] = layer
    before = sliding.keys.clone()
    for op, arg in (("reorder_cache", torch.tensor([1, 0])), ("batch_select_indices", torch.tensor([0])),
                    ("batch_repeat_interleave", 2)):
        with pytest.raises(RuntimeError, match="waits for compression"):
            getattr(cache, op)(arg)
        assert torch.equal(sliding.keys, before), op
    # Bad arguments too are refused before the sliding layer (first in the cache) changes.
    cache.layers[1], *_ = prefilled()
    for op, arg, match in (("reorder_cache", torch.tensor([0, 2]), r"beam_idx must hold rows in \[0, 2\)"),
                           ("batch_select_indices", torch.tensor([-1]), "indices must hold rows"),
                           ("batch_select_indices", torch.tensor([True]), "a boolean mask must cover the 2"),
                           ("batch_repeat_interleave", 0, "repeats must be an integer >= 1")):
        with pytest.raises(ValueError, match=match):
            getattr(cache, op)(arg)
        assert torch.equal(sliding.keys, before), op


def _layer_state(layer):
    """Every tensor a layer holds, by name (prefix fields included), for exact comparisons."""
    from dataclasses import fields

    state = {f"prefix.{f.name}": getattr(layer.prefix.keys, f.name) for f in fields(layer.prefix.keys)}
    state.update({"values": layer.prefix.values, "lengths": layer.prefix.lengths})
    tail_k, tail_v = layer.tail()
    state.update({"tail_keys": tail_k, "tail_values": tail_v})
    return {name: t for name, t in state.items() if isinstance(t, torch.Tensor)}


@pytest.mark.parametrize("spec", ["spark", "snapkv+spark", "pyramidkv+think"])
def test_selected_rows_equal_a_layer_filled_with_those_rows(spec):
    """reorder_cache / batch_select_indices / batch_repeat_interleave: the layer afterwards holds what a layer
    prefilled (padding included) and fed the same tail tokens with the batch rows in that order would hold."""
    from sparkv.config import parse_press

    p = parse_press(spec, key_ratio=0.5, token_ratio=0.4, backend="torch")
    g = torch.Generator().manual_seed(5)
    k, v, q = torch.randn(3, 2, 80, 16, generator=g), torch.randn(3, 2, 80, 16, generator=g), \
        torch.randn(3, 4, 80, 16, generator=g)
    mask = torch.ones(3, 1, 80, 80, dtype=torch.bool).tril()
    mask[1, :, :, :9] = False  # row 1 left-padded by 9 tokens
    tail = [(torch.randn(3, 2, 1, 16, generator=g), torch.randn(3, 2, 1, 16, generator=g)) for _ in range(3)]

    def filled(rows):
        layer = PressedLayer(p, 1, 2, config=SPARKV_CONFIG, tail_chunk=2)
        layer.update(k[rows], v[rows])
        layer.finish_prefill(q[rows], mask[rows], 0.25)
        for tk, tv in tail:
            layer.update(tk[rows], tv[rows])
        return layer

    for op, arg, rows in (("reorder_cache", torch.tensor([2, 0, 0, 1]), [2, 0, 0, 1]),
                          ("batch_select_indices", torch.tensor([True, False, True]), [0, 2]),
                          ("batch_select_indices", [1], [1]),
                          ("batch_repeat_interleave", 2, [0, 0, 1, 1, 2, 2])):
        layer = filled([0, 1, 2])
        getattr(layer, op)(arg)
        want, got = _layer_state(filled(rows)), _layer_state(layer)
        assert want.keys() == got.keys() and torch.equal(got["lengths"], want["lengths"])
        for name in want:  # per-token fields: each row's valid tokens (a fresh batch may store fewer padding slots)
            per_token = name in ("values", "prefix.kept_values", "prefix.kept_bits", "prefix.sign_bits",
                                 "prefix.scale", "prefix.keys")
            for r, n in enumerate(want["lengths"].tolist()):
                w, g = (want[name][r, :, :n], got[name][r, :, :n]) if per_token else (want[name][r], got[name][r])
                assert torch.equal(g, w), (op, name, r)
        assert layer.get_seq_length() == 83 and layer.batch_rows() == len(rows)
        tk, tv = torch.randn(len(rows), 2, 1, 16), torch.randn(len(rows), 2, 1, 16)
        layer.update(tk, tv)  # decoding goes on with the new rows
        assert layer.tail_len == 4 and torch.equal(layer.tail()[0][:, :, -1:], tk)


def test_row_selection_arguments_and_states_are_checked():
    layer, *_ = prefilled()
    for bad, match in ((torch.tensor([2]), r"beam_idx must hold rows in \[0, 2\)"),
                       (torch.tensor([0.5]), "beam_idx must be a 1-D tensor of batch rows")):
        with pytest.raises(ValueError, match=match):
            layer.reorder_cache(bad)
    for bad, match in ((torch.tensor([True]), "indices: a boolean mask must cover the 2 batch rows, got 1"),
                       (torch.tensor([[True, True]]), "indices must be a 1-D tensor")):
        with pytest.raises(ValueError, match=match):
            layer.batch_select_indices(bad)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        layer.batch_repeat_interleave(0)
    empty = PressedLayer(press(), 0, 2, config=SPARKV_CONFIG)
    empty.reorder_cache(torch.tensor([0, 0, 0]))  # nothing held yet: nothing to reorder
    assert empty.batch_rows() is None
    layer.begin_static_tail(4, torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="static tail"):
        layer.reorder_cache(torch.tensor([1, 0]))


def test_deepcopied_layer_follows_the_models_attention_setting():
    import copy

    config = types.SimpleNamespace(_attn_implementation="sparkv")
    layer = PressedLayer(press(), 0, 2, config=config)
    k, v = kv()
    layer.update(k, v)
    layer.finish_prefill(torch.randn(2, 4, 20, 16), None, 0.25)
    twin = copy.deepcopy(layer)
    assert twin.config is config and twin.prefix is not layer.prefix
    assert torch.equal(twin.prefix.values, layer.prefix.values)
    config._attn_implementation = "sdpa"  # the model left the press: the copy must refuse like the original
    with pytest.raises(RuntimeError, match="sparkv"):
        twin.update(k[:, :, :1], v[:, :, :1])
