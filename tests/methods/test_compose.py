"""compress_layer: eviction first, then SparK / ThinK over the survivors, left-aligned and compact (spec §4)."""

from __future__ import annotations

import warnings

import pytest
import torch

from sparkv.cache.layout import DenseKeys, SparKKeys, ThinKKeys, allocated_bytes, num_words
from sparkv.config import EvictionConfig, PressConfig, SparKConfig, ThinKConfig, kept_channels, parse_press
from sparkv.kernels.recover.reference import recover_ref
from sparkv.kernels.select_pack.reference import select_pack_ref
from sparkv.methods.compose import compact, compress_layer, left_align, required_prompt_tokens, window_size
from sparkv.methods.eviction import gather_tokens, select_tokens
from sparkv.methods.spark import window_statistic
from sparkv.methods.think import think_channel_scores, think_select_channels


def make(B=2, H=2, G=2, S=40, D=16, W=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H * G, W, D, generator=g).to(dtype)
    k = torch.randn(B, H, S, D, generator=g).to(dtype)
    v = torch.randn(B, H, S, D, generator=g).to(dtype).transpose(1, 2).contiguous().transpose(1, 2)  # a view
    return q, k, v


def spark(ratio=0.5, window=8, **kw):
    return PressConfig(channels=SparKConfig(channel_prune_ratio=ratio, window=window, **kw), backend="torch")


def snap(budget=20, window=8):
    return EvictionConfig(method="snapkv", token_budget=budget, window=window)


def assert_compact(ckv):
    for t in ckv.tensors():
        assert t.is_contiguous() and t.storage_offset() == 0
        assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    assert ckv.nbytes() == ckv.allocated_bytes() == allocated_bytes(ckv.tensors())


def test_full_press_keeps_dense_keys_and_values():
    q, k, v = make()
    out = compress_layer(PressConfig(), q, k, v, None, 0.25, 0, 2)
    assert isinstance(out.keys, DenseKeys)
    torch.testing.assert_close(out.keys.keys, k, rtol=0, atol=0)
    torch.testing.assert_close(out.values, v, rtol=0, atol=0)
    assert out.lengths.dtype == torch.int32 and out.lengths.tolist() == [40, 40]
    assert_compact(out)


def test_spark_without_eviction_is_select_pack_of_all_tokens():
    q, k, v = make(seed=1)
    press = spark(0.5, window=8)
    out = compress_layer(press, q, k, v, None, 0.25, 0, 2)
    ref = select_pack_ref(k, window_statistic(q[:, :, -8:], 2), kept_channels(16, 0.5))
    assert isinstance(out.keys, SparKKeys) and out.keys.kept == 8
    for name in ("kept_values", "kept_bits", "sign_bits", "scale", "u"):
        torch.testing.assert_close(getattr(out.keys, name), getattr(ref, name), rtol=0, atol=0)
    assert_compact(out)


def test_spark_lambda_zero_recovers_keys_exactly():
    q, k, v = make(seed=2)
    out = compress_layer(spark(0.0), q, k, v, None, 0.25, 0, 2)
    torch.testing.assert_close(recover_ref(out.keys), k, rtol=0, atol=0)


@pytest.mark.parametrize("channels", ["spark", "think"])
def test_eviction_then_channels_over_survivors(channels):
    q, k, v = make(seed=3)
    ch = SparKConfig(channel_prune_ratio=0.5, window=8) if channels == "spark" else ThinKConfig(0.5, window=8)
    press = PressConfig(eviction=snap(20, 8), channels=ch, backend="torch")
    out = compress_layer(press, q, k, v, None, 0.3, 1, 2)
    sel = select_tokens(press.eviction, q, k, torch.ones(2, 40, dtype=torch.bool), 0.3, 1, 2)
    ks, vs = gather_tokens(k, sel), gather_tokens(v, sel)
    assert out.num_tokens == 20 and out.lengths.tolist() == [20, 20]
    torch.testing.assert_close(out.values, vs, rtol=0, atol=0)
    if channels == "spark":
        # The window statistic comes from the window queries, unaffected by eviction.
        ref = select_pack_ref(ks, window_statistic(q[:, :, -8:], 2), 8)
        torch.testing.assert_close(out.keys.kept_values, ref.kept_values, rtol=0, atol=0)
        torch.testing.assert_close(out.keys.kept_bits, ref.kept_bits, rtol=0, atol=0)
    else:
        idx = think_select_channels(think_channel_scores(q[:, :, -8:], ks), 8)
        assert isinstance(out.keys, ThinKKeys) and out.keys.channel_idx.dtype == torch.int16
        torch.testing.assert_close(out.keys.channel_idx.long(), idx, rtol=0, atol=0)
        torch.testing.assert_close(out.keys.kept_values, ks.gather(-1, idx[:, :, None].expand(-1, -1, 20, -1)),
                                   rtol=0, atol=0)
    assert_compact(out)


def test_a_key_ratio_below_the_layout_break_even_warns():
    """At λ = 0.1, bf16, D = 64 the bitmaps, signs and scale outweigh the 6 pruned channels: compressing says so;
    at λ = 0.5 it does not."""
    q, k, v = make(D=64, dtype=torch.bfloat16)
    with pytest.warns(UserWarning, match="outweigh the channels it prunes"):
        ckv = compress_layer(spark(0.1), q, k, v, None, 0.125, 0, 1)
    assert ckv.keys.nbytes() >= k.numel() * k.element_size()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ckv = compress_layer(spark(0.5), q, k, v, None, 0.125, 0, 1)
    assert ckv.keys.nbytes() < k.numel() * k.element_size()


def test_think_bytes_are_real():
    q, k, v = make(B=1, H=2, S=40, D=16, seed=4, dtype=torch.bfloat16)
    out = compress_layer(PressConfig(channels=ThinKConfig(0.75, window=8)), q, k, v, None, 0.25, 0, 1)
    dk = kept_channels(16, 0.75)
    assert out.keys.kept_values.shape == (1, 2, 40, dk)
    assert out.nbytes() == 2 * 40 * dk * 2 + 2 * dk * 2 + 2 * 40 * 16 * 2 + 4
    assert_compact(out)


def test_spark_bytes_formula():
    b, h, s, d = 2, 2, 40, 16
    q, k, v = make(B=b, H=h, S=s, D=d, seed=5, dtype=torch.bfloat16)
    out = compress_layer(spark(0.5), q, k, v, None, 0.25, 0, 1)
    dk, nw = kept_channels(d, 0.5), num_words(d)
    per_token = dk * 2 + 2 * nw * 4 + 2  # kept values, kept + sign bitmaps, scale (bf16)
    expected = b * h * s * per_token + b * h * d * 4 + b * h * s * d * 2 + b * 4
    assert out.nbytes() == expected
    assert_compact(out)


def test_left_padding_is_dropped_and_rows_match_unpadded():
    """Row 0 has 6 padding tokens: compressing the padded batch equals compressing each row alone."""
    q, k, v = make(B=2, S=40, seed=6)
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[0, :6] = False
    for press in (PressConfig(backend="torch"), spark(0.5),
                  PressConfig(eviction=snap(20, 8), channels=SparKConfig(0.5, window=8), backend="torch")):
        out = compress_layer(press, q, k, v, valid, 0.25, 0, 2)
        alone = compress_layer(press, q[:1], k[:1, :, 6:], v[:1, :, 6:], None, 0.25, 0, 2)
        n = int(out.lengths[0])
        assert n == alone.num_tokens
        torch.testing.assert_close(recover_ref(out.keys)[:1, :, :n], recover_ref(alone.keys), rtol=0, atol=0)
        torch.testing.assert_close(out.values[:1, :, :n], alone.values, rtol=0, atol=0)
        assert out.lengths.tolist()[1] == (40 if press.eviction is None else 20)


def test_left_align_selection():
    valid = torch.tensor([[False, False, True, True, True], [True, True, True, True, True]])
    sel = left_align(valid, 3)
    assert sel.lengths.tolist() == [3, 5]
    assert sel.indices.shape == (2, 3, 5)
    assert sel.indices[0, 0].tolist() == [2, 3, 4, 0, 1]


def test_windows():
    assert window_size(PressConfig()) == 0 and required_prompt_tokens(PressConfig()) == 1
    assert window_size(parse_press("spark")) == 32
    assert window_size(parse_press("snapkv+spark", budget=100)) == 64
    # StreamingLLM reads no window queries.
    assert window_size(parse_press("streamingllm+think", budget=100)) == 32
    assert window_size(parse_press("streamingllm", budget=100)) == 0


def test_errors_name_the_parameter():
    q, k, v = make(S=40)
    with pytest.raises(ValueError, match="window"):
        compress_layer(spark(window=50), q, k, v, None, 0.25, 0, 2)  # 16 window queries given < 50
    valid = torch.ones(2, 40, dtype=torch.bool)
    valid[1, :35] = False  # 5 valid tokens < window 8
    with pytest.raises(ValueError, match="context too short.*window"):
        compress_layer(spark(window=8), q, k, v, valid, 0.25, 0, 2)
    right = torch.ones(2, 40, dtype=torch.bool)
    right[0, -3:] = False
    with pytest.raises(ValueError, match="right padding"):
        compress_layer(PressConfig(), q, k, v, right, 0.25, 0, 2)
    with pytest.raises(ValueError, match="valid_mask"):
        compress_layer(PressConfig(), q, k, v, torch.ones(2, 39, dtype=torch.bool), 0.25, 0, 2)
    with pytest.raises(TypeError):
        compress_layer("spark", q, k, v, None, 0.25, 0, 2)


def test_compact_copies_only_views():
    t = torch.randn(4, 8)
    assert compact(t) is t
    view = t[1:]
    c = compact(view)
    assert c is not view and c.untyped_storage().nbytes() == c.numel() * 4
    torch.testing.assert_close(c, view)


@pytest.mark.parametrize("spec,kw,message", [
    ("think", {}, "no kernel for ThinK layouts"),
    ("snapkv+think", {"budget": 128}, "no kernel for ThinK layouts"),
    ("spark", {"recovery": "gaussian"}, "not 'gaussian'"),
])
def test_forcing_the_gpu_kernels_where_they_have_no_path_is_refused_up_front(spec, kw, message):
    from sparkv.config import parse_press

    with pytest.raises(ValueError, match=message):
        parse_press(spec, backend="triton", **kw)
    parse_press(spec, backend="auto", **kw)  # auto takes the PyTorch path for these


def test_numpy_numbers_are_taken_as_python_numbers():
    """Sweeps built with NumPy: its scalars are accepted where Python's are, and the config keeps Python types (so
    it stays JSON), while NumPy booleans and out-of-range values are still refused."""
    import json

    import numpy as np

    from sparkv.config import parse_press

    press = parse_press("snapkv+spark", key_ratio=np.float32(0.5), budget=np.int64(512))
    assert press.channels.channel_prune_ratio == 0.5 and type(press.channels.channel_prune_ratio) is float
    assert press.eviction.token_budget == 512 and type(press.eviction.token_budget) is int
    json.dumps(press.to_dict())
    ratio = parse_press("streamingllm", token_ratio=np.float64(0.25))
    assert type(ratio.eviction.token_ratio) is float
    with pytest.raises(ValueError, match=r"must be a number in \[0, 1\)"):
        parse_press("spark", key_ratio=np.float32(1.0))
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        parse_press("snapkv", budget=np.float64(512.0))


def test_names_are_case_insensitive_in_parse_press():
    from sparkv.config import parse_press

    press = parse_press("SnapKV+SparK", recovery="MEAN_Linear", saliency=" Paper", backend="Torch")
    assert (press.eviction.method, press.channels.method) == ("snapkv", "spark")
    assert (press.channels.recovery, press.channels.saliency, press.backend) == ("mean_linear", "paper", "torch")
    with pytest.raises(ValueError, match="recovery must be one of"):
        parse_press("spark", recovery="Gauss")


def test_forcing_the_gpu_kernels_at_lambda_zero_is_allowed():
    """λ = 0 stores dense keys, which the GPU path serves whatever the channel method."""
    from sparkv.config import parse_press

    think = parse_press("think", key_ratio=0.0, backend="triton")
    assert think.backend == "triton" and think.channels.method == "think"
    assert think.channels.channel_prune_ratio == 0.0
    spark = parse_press("spark", key_ratio=0.0, recovery="gaussian", backend="triton")
    assert spark.backend == "triton" and spark.channels.recovery == "gaussian"
    assert spark.channels.channel_prune_ratio == 0.0

