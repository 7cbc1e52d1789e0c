"""sparkv inside transformers, on tiny random models (fp32, CPU): exactness at λ = 0, recovery inside the model,
the attention/cache handshake, the context manager, and the errors."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache

import sparkv
from sparkv.cache.layer import PressedLayer
from sparkv.config import parse_press
from sparkv.integration.transformers import (
    Press,
    cache_kwarg,
    check_model_supported,
    use_sparkv_attention,
)
from sparkv.kernels.recover.reference import recover_ref
from tests.utils import CONFIGS, CONTEXT, PAD, encode, teacher_forced_logits, tiny_model, tiny_tokenizer

ARCHS = list(CONFIGS)


def assert_logits_close(got, ref, rel=1e-6):
    """``max |got - ref| <= rel * max(1, max |ref|)``: float32 rounding of a differently ordered attention sum,
    relative to the logit scale (the tiny models' logits reach ~5)."""
    bound = rel * max(1.0, ref.abs().max().item())
    err = (got - ref).abs().max().item()
    assert err <= bound, f"max |diff| {err:.3e} > {bound:.3e}"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module", params=ARCHS)
def arch_model(request):
    return request.param, tiny_model(request.param)


@pytest.mark.parametrize("spec", ["spark", "full"])
def test_lambda_zero_matches_plain_transformers(arch_model, tok, spec):
    """λ = 0 (and the full press): logits equal to a plain DynamicCache/sdpa run's, greedy tokens identical."""
    arch, model = arch_model
    ids, mask = encode(tok, [CONTEXT])
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    press = Press(spec, key_ratio=0.0)
    with press(model):
        ours = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    assert torch.equal(plain, ours)
    assert isinstance(press.last_cache.layers[-1], PressedLayer) and press.last_cache.layers[-1].prefix is not None

    forced = plain[:, ids.shape[1]:]
    ref = teacher_forced_logits(model, ids, mask, DynamicCache(config=model.config), forced)
    with use_sparkv_attention(model):
        got = teacher_forced_logits(model, ids, mask, press.make_cache(model), forced)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # prefill: the same sdpa call
    for r, g in zip(ref[1:], got[1:]):
        torch.testing.assert_close(g, r, rtol=0, atol=0)  # dense prefix, no padding: the same sdpa call


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_second_turn_on_the_same_cache_matches_plain_transformers(tok, arch):
    """A chat's second turn: generate again from the first turn's cache with new prompt tokens appended (a
    multi-token forward into the tail). With the full press it must give plain transformers' tokens."""
    model = tiny_model(arch)
    ids, mask = encode(tok, [CONTEXT])
    turn2 = torch.randint(5, 200, (1, 9), generator=torch.Generator().manual_seed(3))

    def two_turns(cache):
        first = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=PAD,
                               past_key_values=cache)
        second = torch.cat([first, turn2], 1)
        return model.generate(second, attention_mask=torch.ones_like(second), max_new_tokens=4, do_sample=False,
                              pad_token_id=PAD, past_key_values=cache)

    plain = two_turns(DynamicCache(config=model.config))
    press = Press("full")
    with press(model):
        ours = two_turns(press.make_cache(model))
    assert torch.equal(plain, ours)


def test_gemma3_multimodal_text_only(tok):
    """model_type "gemma3" (vision tower + text model): the text layers are compressed, the rest is untouched."""
    from tests.utils import tiny_gemma3_multimodal

    model = tiny_gemma3_multimodal()
    ids, mask = encode(tok, [CONTEXT])
    forced = torch.tensor([[10, 20, 30]])
    ref = teacher_forced_logits(model, ids, mask, DynamicCache(config=model.config), forced)
    press = Press("spark", key_ratio=0.0)
    with press(model):
        assert model.config.vision_config._attn_implementation == "sparkv"  # delegated to sdpa
        got = teacher_forced_logits(model, ids, mask, press.make_cache(model), forced)
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.config.vision_config._attn_implementation == "sdpa"
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)
    for r, g in zip(ref[1:], got[1:]):
        assert_logits_close(g, r)
    assert [type(layer).__name__ for layer in press.last_cache.layers] == [
        "DenseSlidingLayer", "PressedLayer", "DenseSlidingLayer", "PressedLayer"]


def test_lambda_zero_matches_eager_too(tok):
    model = tiny_model("llama", attn="eager")
    ids, mask = encode(tok, [CONTEXT])
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    ref = teacher_forced_logits(model, ids, mask, DynamicCache(config=model.config), plain[:, ids.shape[1]:])
    press = Press("spark", key_ratio=0.0)
    with press(model):
        got = teacher_forced_logits(model, ids, mask, press.make_cache(model), plain[:, ids.shape[1]:])
    assert model.config._attn_implementation == "eager"
    for r, g in zip(ref, got):
        assert_logits_close(g, r, rel=1e-5)


@pytest.mark.parametrize("spec", ["spark", "think", "snapkv+spark"])
def test_positive_ratio_runs_and_differs(arch_model, tok, spec):
    arch, model = arch_model
    ids, mask = encode(tok, [CONTEXT])
    forced = torch.tensor([[10, 20, 30]])
    ref = teacher_forced_logits(model, ids, mask, DynamicCache(config=model.config), forced)
    press = Press(spec, key_ratio=0.75, budget=100)
    with use_sparkv_attention(model):
        got = teacher_forced_logits(model, ids, mask, press.make_cache(model), forced)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # prefill attention is dense: identical
    decode_diff = max((g - r).abs().max().item() for g, r in zip(got[1:], ref[1:]))
    assert all(torch.isfinite(g).all() for g in got)
    assert decode_diff > 1e-4, f"{arch} {spec}: compression left the decode logits unchanged"


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
# A chunk of several new tokens is checked where every layer keeps the same number of tokens: the DynamicCache
# oracle masks all layers with layer 0's length, which PyramidKV's per-layer budgets break.
@pytest.mark.parametrize("spec,steps", [("spark", (1,)), ("snapkv+spark", (1,)), ("pyramidkv+think", (1,)),
                                        ("spark", (7, 1)), ("snapkv+spark", (7, 1))],
                         ids=["spark-1", "snapkv+spark-1", "pyramidkv+think-1", "spark-7+1", "snapkv+spark-7+1"])
def test_decode_equals_attention_over_recovered_keys(tok, arch, spec, steps):
    """Forwards after the prompt inside the model (one token, or a chunk of new tokens as in a second chat turn, then
    one more): packed-key attention == attention over materialised K̂ (recover_ref), at every new position."""
    model = tiny_model(arch)
    ids, mask = encode(tok, [CONTEXT])
    s = ids.shape[1]
    press = Press(spec, key_ratio=0.5, budget=100, recovery="mean")
    kw = cache_kwarg(model)
    chunks = [torch.randint(5, 200, (1, n), generator=torch.Generator().manual_seed(n)) for n in steps]
    with use_sparkv_attention(model):
        cache = press.make_cache(model)
        model(ids, attention_mask=mask, use_cache=True, **{kw: cache})
    oracle = DynamicCache()
    for i, layer in enumerate(cache.layers):
        n = int(layer.prefix.lengths[0])
        k_hat = recover_ref(layer.prefix.keys)[:, :, :n].to(model.dtype)
        oracle.update(k_hat, layer.prefix.values[:, :, :n], i)
    if spec != "spark":
        assert oracle.get_seq_length() < s  # eviction really removed tokens
    pos = s
    for new in chunks:
        position_ids = torch.arange(pos, pos + new.shape[1]).unsqueeze(0)
        with use_sparkv_attention(model):
            got = model(new, use_cache=True, position_ids=position_ids, **{kw: cache}).logits
        ref = model(new, use_cache=True, position_ids=position_ids, **{kw: oracle}).logits
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
        pos += new.shape[1]


def test_cache_logical_length_after_eviction(tok):
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT])
    press = Press("snapkv", budget=80)
    with press(model):
        model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
    cache = press.last_cache
    s = ids.shape[1]
    for layer in cache.layers:
        assert layer.prefix.num_tokens == 80
        assert layer.get_seq_length() == s + 3  # the last generated token is never fed back
    assert cache.get_seq_length() == s + 3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs(tok, dtype):
    model = tiny_model("qwen3", dtype=dtype)
    r = sparkv.generate(model, tok, [CONTEXT, CONTEXT[30:]], "Q?", Press("snapkv+spark", budget=100),
                        max_new_tokens=4)
    assert len(r.answer) == 2
    assert r.memory.compressed_kv_bytes == r.memory.allocated_kv_bytes
    ids, mask = encode(tok, [CONTEXT])
    press = Press("spark", key_ratio=0.5)
    with use_sparkv_attention(model):
        logits = teacher_forced_logits(model, ids, mask, press.make_cache(model), torch.tensor([[5, 6]]))
    assert all(torch.isfinite(x.float()).all() for x in logits)
    assert press.last_cache.layers[0].prefix.keys.kept_values.dtype == dtype


def test_sampling_matches_plain_at_lambda_zero(tok):
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT, CONTEXT[50:]])
    torch.manual_seed(123)
    plain = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=20, pad_token_id=PAD)
    torch.manual_seed(123)
    with Press("spark", key_ratio=0.0)(model):
        ours = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=20,
                              pad_token_id=PAD)
    assert torch.equal(plain, ours)


def test_context_manager_restores_the_model(tok):
    model = tiny_model("gemma3_text")
    ids, mask = encode(tok, [CONTEXT])
    before = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    press = Press("snapkv+spark", budget=100)
    with press(model) as p:
        assert p is press
        assert model.config._attn_implementation == "sparkv"
        assert "generate" in model.__dict__
        # A forward without a cache inside the block runs dense (plain tensors are delegated to sdpa).
        dense = model(ids, attention_mask=mask).logits
        model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=PAD)
        assert press.last_cache is not None
    assert model.config._attn_implementation == "sdpa"
    assert "generate" not in model.__dict__
    with pytest.raises(KeyError):
        with press(model):
            raise KeyError("boom")
    assert model.config._attn_implementation == "sdpa" and "generate" not in model.__dict__
    after = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    assert torch.equal(before, after)
    torch.testing.assert_close(dense, model(ids, attention_mask=mask).logits, rtol=0, atol=0)


def test_explicit_cache_is_not_replaced(tok):
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT])
    press = Press("spark")
    mine = press.make_cache(model)
    with press(model):
        model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD,
                       **{cache_kwarg(model): mine})
    assert press.last_cache is mine and mine.layers[0].prefix is not None


def test_cache_without_sparkv_attention_raises(tok):
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT])
    cache = Press("spark").make_cache(model)
    with pytest.raises(RuntimeError, match="attention implementation"):
        model(ids, attention_mask=mask, use_cache=True, **{cache_kwarg(model): cache})


def test_forced_torch_backend(tok):
    model = tiny_model("llama")
    r = sparkv.generate(model, tok, CONTEXT, "Q?", parse_press("spark", backend="torch"), max_new_tokens=3)
    assert isinstance(r.answer, str) and r.memory.compressed_layers == 2


# --- errors ----------------------------------------------------------------------------------------------------


def test_error_key_ratio_out_of_range():
    with pytest.raises(ValueError, match="channel_prune_ratio"):
        parse_press("spark", key_ratio=1.0)
    with pytest.raises(ValueError, match="channel_prune_ratio"):
        Press("snapkv+think", key_ratio=-0.1)


def test_error_budget_not_above_window():
    with pytest.raises(ValueError, match="token_budget.*window"):
        parse_press("snapkv+spark", budget=64)


def test_error_empty_context(tok):
    model = tiny_model("llama")
    for bad in ("", "   ", []):
        with pytest.raises(ValueError, match="context"):
            sparkv.generate(model, tok, bad, "Q?", "spark")


def test_error_max_new_tokens_below_one(tok):
    model = tiny_model("llama")
    for bad in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1"):
            sparkv.generate(model, tok, CONTEXT, "Q?", "spark", max_new_tokens=bad)


def test_error_context_shorter_than_window(tok):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="context too short.*window"):
        sparkv.generate(model, tok, "A short one.", "Q?", "snapkv+spark", chat_template=False)
    # Straight through model.generate too: the check happens when the layer compresses.
    ids, mask = encode(tok, ["A short one."])
    with pytest.raises(ValueError, match="context too short.*window"):
        with Press("spark")(model):
            model.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD)


def test_error_context_longer_than_the_model(tok):
    model = tiny_model("llama")
    limit = model.config.max_position_embeddings
    long = " ".join(["word"] * (limit + 50))
    with pytest.raises(ValueError, match=f"exceed the model's context of {limit} tokens"):
        sparkv.generate(model, tok, long, "Q?", "spark", max_new_tokens=4)
    with pytest.raises(ValueError, match=r"exceed max_context \(CLI: --max-context\) = 100 tokens"):
        sparkv.generate_many(model, tok, CONTEXT, "Q?", ["spark"], max_new_tokens=4, max_context=100)
    with pytest.raises(ValueError, match="max_context must be a positive integer"):
        sparkv.generate(model, tok, CONTEXT, "Q?", "spark", max_context=0)


def test_error_unsupported_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=300))
    with pytest.raises(ValueError, match=r"model_type 'gpt2'.*llama, qwen2, qwen3, mistral, gemma3_text, gemma3"):
        Press("spark").make_cache(model)
    with pytest.raises(ValueError, match="gpt2"):
        with Press("spark")(model):
            pass
    assert model.config._attn_implementation != "sparkv"


def test_error_unsupported_attention_features():
    from tests.utils import gemma3_config, mistral_config

    with pytest.raises(ValueError, match="attn_logit_softcapping"):
        check_model_supported(gemma3_config(attn_logit_softcapping=50.0))
    with pytest.raises(ValueError, match="sliding_window"):
        check_model_supported(mistral_config(sliding_window=4096))


@pytest.mark.parametrize("spec", ["snapkv+spark", "spark", "full"])
def test_num_return_sequences_inside_a_press_equals_the_copied_batch(tok, spec):
    """Inside a press, ``num_return_sequences=n`` samples as a batch of each prompt copied n times would (same seed):
    transformers copies the rows before the prefill, so every copy is compressed as a row of its own."""
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT, CONTEXT[60:]])  # left-padded: the copies keep their padding
    press = Press(spec, key_ratio=0.5, **({"token_ratio": 0.5} if "+" in spec else {}))
    kwargs = dict(max_new_tokens=6, do_sample=True, top_k=0, pad_token_id=PAD)
    with press(model):
        torch.manual_seed(0)
        several = model.generate(ids, attention_mask=mask, num_return_sequences=3, **kwargs)
        torch.manual_seed(0)
        copied = model.generate(ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0), **kwargs)
    assert several.shape == (6, ids.shape[1] + 6)
    assert torch.equal(several, copied)
    assert press.last_cache.layers[-1].prefix is not None
    if "+" in spec:  # the copies were evicted too, not just kept dense
        assert press.last_cache.layers[-1].prefix.num_tokens < ids.shape[1]


@pytest.mark.parametrize("spec", ["full", "spark"])
def test_beam_search_at_lambda_zero_matches_plain_transformers(arch_model, tok, spec):
    """Beam search reorders the cache's rows every step: with nothing pruned it must give plain transformers' beams
    exactly (left-padded batch; Gemma3's dense sliding layers reorder beside the pressed ones)."""
    arch, model = arch_model
    ids, mask = encode(tok, [CONTEXT, CONTEXT[60:]])
    kwargs = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, do_sample=False, pad_token_id=PAD)
    plain = model.generate(ids, attention_mask=mask, **kwargs)
    with Press(spec, key_ratio=0.0)(model):
        ours = model.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(plain, ours)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_beam_search_equals_beam_search_over_the_materialised_recovered_keys(tok, arch):
    """λ = 0.9: beam search over the compressed cache gives the beams of the same search over a DynamicCache that
    holds the recovered keys K̂ and the values (transformers reorders that one itself), though not plain
    transformers' beams: every reorder carries each row's compressed prompt and decode tail along."""
    model = tiny_model(arch)
    ids, _ = encode(tok, [CONTEXT])
    beams, name = 4, cache_kwarg(model)
    press = Press("spark", key_ratio=0.9)
    cache = press.make_cache(model)
    with use_sparkv_attention(model):  # the prompt but its last token, one row per beam (generate copies the input)
        model(ids[:, :-1].repeat_interleave(beams, 0), use_cache=True, **{name: cache})
    oracle = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        oracle.update(recover_ref(layer.prefix.keys).to(layer.prefix.values.dtype), layer.prefix.values, i)
    kwargs = dict(attention_mask=torch.ones_like(ids), num_beams=beams, max_new_tokens=16, do_sample=False,
                  pad_token_id=PAD)
    want = model.generate(ids, **{name: oracle}, **kwargs)
    with use_sparkv_attention(model):
        got = model.generate(ids, **{name: cache}, **kwargs)
    assert torch.equal(got, want)
    assert not torch.equal(got, model.generate(ids, **kwargs))  # the pruning shows: this test can tell


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("spec", ["full", "spark", "snapkv+spark"])
def test_assisted_decoding_and_prompt_lookup_equal_greedy_decoding(tok, arch, spec, monkeypatch):
    """Assisted decoding and prompt lookup inside a press. The prompt's forward also verifies the first candidates:
    the prompt is compressed, then those candidates join the decode tail (``PressedLayer.early_tail``) and attend as
    decode steps do; rejected candidates are cropped from the tail. So the tokens are greedy decoding's over the same
    compressed cache, and at λ = 0 plain transformers'. The assistant is the model's own weights over a dense cache:
    at λ = 0 it proposes the right tokens, under pruning some are rejected. Gemma3 gets a Llama assistant: a Gemma3
    assistant's own DynamicCache (no sparkv in it) failed inside transformers 5.17 on the H200 machine, its sliding
    layers holding more tokens than their mask after rejections."""
    model = tiny_model(arch)
    assistant = copy.deepcopy(model) if arch == "llama" else tiny_model("llama", seed=1)
    ids, mask = encode(tok, [CONTEXT])
    kwargs = dict(max_new_tokens=24, do_sample=False, pad_token_id=PAD)
    press = Press(spec, key_ratio=0.0 if spec == "full" else 0.8, **({"token_ratio": 0.5} if "+" in spec else {}))
    with press(model):
        want = model.generate(ids, attention_mask=mask, **kwargs)
    plain = model.generate(ids, attention_mask=mask, **kwargs)
    assert torch.equal(want, plain) == (spec == "full")  # the pruning shows: the rejections below are real
    early, crops, forwards = [], [], []
    finish, crop = PressedLayer.finish_prefill, PressedLayer.crop
    monkeypatch.setattr(PressedLayer, "finish_prefill",
                        lambda layer, *a: (early.append(layer.early_tail_len), finish(layer, *a))[1])
    monkeypatch.setattr(PressedLayer, "crop", lambda layer, n: (crops.append(n), crop(layer, n))[1])
    hook = model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        for extra in (dict(prompt_lookup_num_tokens=4), dict(assistant_model=assistant)):
            early.clear(), crops.clear(), forwards.clear()
            with press(model):
                got = model.generate(ids, attention_mask=mask, **extra, **kwargs)
            assert torch.equal(got, want), extra
            cache = press.last_cache
            assert cache.get_seq_length() == got.shape[1] - 1  # every accepted token but the last is cached
            if "assistant_model" in extra:
                assert early and min(early) > 0  # every pressed layer took candidates in the prompt's forward
                assert min(crops) < 0 or (spec, arch) == ("full", "llama")  # candidates rejected, cropped
                if arch == "llama" and spec == "full":
                    assert len(forwards) < kwargs["max_new_tokens"]  # candidates accepted: fewer forwards than tokens
    finally:
        hook.remove()


def test_assisted_decoding_is_refused_where_a_sparkv_cache_cannot_serve_it(tok):
    """Refused before anything changes: an unannounced prompt (the candidates would be compressed with it), a cache
    that already holds a prompt (transformers re-feeds the whole input to the first forward), inputs_embeds beside
    input_ids, and an assistant that itself runs inside a press (its cache would be cropped into its prompt)."""
    model = tiny_model("llama")
    ids, mask = encode(tok, [CONTEXT])
    name = cache_kwarg(model)
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    cache = Press("spark").make_cache(model)
    with use_sparkv_attention(model), pytest.raises(ValueError, match="prompt's length announced"):
        model.generate(ids, prompt_lookup_num_tokens=3, **{name: cache}, **kwargs)
    assert cache.get_seq_length() == 0
    press = Press("spark")
    with press(model):
        first = model.generate(ids, **kwargs)
        filled = press.last_cache
        length = filled.get_seq_length()
        with pytest.raises(ValueError, match="need an empty sparkv cache"):
            model.generate(first, prompt_lookup_num_tokens=3, **{name: filled}, **dict(kwargs, attention_mask=None))
        assert filled.get_seq_length() == length
        with pytest.raises(ValueError, match="inputs_embeds is not supported"):
            model.generate(ids, inputs_embeds=model.get_input_embeddings()(ids), prompt_lookup_num_tokens=3,
                           **kwargs)
        helper = tiny_model("llama", seed=1)
        with Press("spark")(helper), pytest.raises(ValueError, match="assistant_model runs inside a sparkv press"):
            model.generate(ids, assistant_model=helper, **kwargs)


def test_assisted_decoding_leaves_sliding_layers_holding_their_window(tok):
    """transformers turns past recording on for assisted decoding and never off: after the call the press turns it
    off, so Gemma3's dense sliding layers hold their window again, and the bytes held are the bytes counted."""
    model = tiny_model("gemma3_text")
    ids, mask = encode(tok, [CONTEXT])
    press = Press("snapkv+spark", key_ratio=0.5, token_ratio=0.5)
    with press(model):
        out = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=PAD,
                             prompt_lookup_num_tokens=3)
        cache = press.last_cache
        sliding = [layer for layer in cache.layers if not isinstance(layer, PressedLayer)]
        assert sliding and not any(layer.record_past for layer in sliding)
        report = press.memory()
        assert report.allocated_kv_bytes == report.compressed_kv_bytes
        turn = torch.full((1, 20), 7)
        model.generate(torch.cat([out, turn], 1), max_new_tokens=4, do_sample=False, pad_token_id=PAD,
                       **{cache_kwarg(model): cache})
    window = model.config.sliding_window
    assert all(layer.keys.shape[-2] == window - 1 for layer in sliding)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark", "pyramidkv+think"])
def test_chunked_prefill_equals_one_prefill(tok, arch, spec, monkeypatch):
    """``prefill_chunk_size`` inside a press: the chunks accumulate densely and each layer compresses after the chunk
    that completes the prompt, with the window of the last queries across chunks; the answer and the compressed
    layers are one prefill's (left-padded batch; a last chunk of one token; Gemma3's sliding layers)."""
    model = tiny_model(arch)
    ids, mask = encode(tok, [CONTEXT + " " + CONTEXT[:80], CONTEXT])
    press = Press(spec, key_ratio=0.5, **({"token_ratio": 0.5} if "+" in spec else {}))
    kwargs = dict(max_new_tokens=8, do_sample=False, pad_token_id=PAD)
    with press(model):
        one = model.generate(ids, attention_mask=mask, **kwargs)
        want = [layer.prefix for layer in press.last_cache.layers if isinstance(layer, PressedLayer)]
    chunks = []
    update = PressedLayer.update

    def counting(layer, k, v, *args, **kw):
        if layer.prefix is None:
            chunks.append(k.shape[-2])
        return update(layer, k, v, *args, **kw)

    monkeypatch.setattr(PressedLayer, "update", counting)
    for size in (64, ids.shape[1] - 1):
        chunks.clear()
        with press(model):
            got = model.generate(ids, attention_mask=mask, prefill_chunk_size=size, **kwargs)
        layers = [layer for layer in press.last_cache.layers if isinstance(layer, PressedLayer)]
        assert len(chunks) == len(layers) * -(-ids.shape[1] // size)  # the prompt really came in chunks
        assert torch.equal(got, one)
        for w, layer in zip(want, layers):
            g = layer.prefix
            assert torch.equal(w.lengths, g.lengths) and w.num_tokens == g.num_tokens
            torch.testing.assert_close(recover_ref(g.keys), recover_ref(w.keys), rtol=1e-5, atol=1e-5)
            assert layer.window_queries is None and layer.keys is None  # scratch freed after compression


def test_chunked_prefill_failures_leave_the_cache_reusable(tok, monkeypatch):
    """A chunked call refused by transformers after sparkv announced the prompt, or failing in its last chunk, leaves
    the cache empty: the next call on it answers as a fresh cache. Bad chunk sizes name the parameter; a second turn
    in chunks goes to the tail, refused on transformers < 5.21 whose chunks would start over."""
    from sparkv.integration import transformers as integration

    model = tiny_model("llama")
    name = cache_kwarg(model)  # "cache" on transformers >= 5.24, "past_key_values" before
    press = Press("snapkv+spark", key_ratio=0.5, token_ratio=0.5)
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=PAD)
    ids, mask = encode(tok, [CONTEXT])
    short, short_mask = encode(tok, [CONTEXT[:150]])
    with press(model):
        fresh = model.generate(short, attention_mask=short_mask, **kwargs)
        cache = press.make_cache(model)
        with pytest.raises(ValueError, match="num_return_sequences"):  # transformers' own check, after the announce
            model.generate(ids, attention_mask=mask, **{name: cache}, prefill_chunk_size=16, num_beams=2,
                           num_return_sequences=3, **kwargs)
        assert cache.get_seq_length() == 0 and all(layer.prefill_tokens is None for layer in cache.layers)
        assert torch.equal(model.generate(short, attention_mask=short_mask, **{name: cache}, **kwargs), fresh)
        tiny, tiny_mask = encode(tok, [CONTEXT, "too short a row"])  # row 1 is shorter than the press window
        cache = press.make_cache(model)
        with pytest.raises(ValueError, match="too short"):
            model.generate(tiny, attention_mask=tiny_mask, **{name: cache}, prefill_chunk_size=64, **kwargs)
        assert cache.get_seq_length() == 0 and all(layer.keys is None for layer in cache.layers)
        assert torch.equal(model.generate(short, attention_mask=short_mask, **{name: cache}, **kwargs), fresh)
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="prefill_chunk_size must be an integer >= 1"):
                model.generate(ids, attention_mask=mask, prefill_chunk_size=bad, **kwargs)
        # A second turn on a filled cache: chunks go to the decode tail, as one multi-token continuation does
        # (transformers >= 5.21; the GPU machines run 5.17, where it is refused as below).
        turns = []
        skips_cache = integration.chunks_skip_the_cache()
        for chunk in (None, 4) if skips_cache else (None,):
            cache = press.make_cache(model)
            first = model.generate(ids, attention_mask=mask, **{name: cache}, **kwargs)
            second = torch.cat([first, ids[:, 5:15]], 1)
            turns.append(model.generate(second, attention_mask=torch.ones_like(second), **{name: cache},
                                        prefill_chunk_size=chunk, **kwargs))
        assert not skips_cache or torch.equal(turns[0], turns[1])
        monkeypatch.setattr(integration, "chunks_skip_the_cache", lambda: False)  # as on 5.17-5.20
        with pytest.raises(ValueError, match=r"needs transformers >= 5.21 \(earlier versions start the chunks over"):
            model.generate(second, attention_mask=torch.ones_like(second), **{name: cache}, prefill_chunk_size=4,
                           **kwargs)


def test_error_unsupported_generate_options(tok):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="not supported by generate_many"):
        sparkv.generate_many(model, tok, CONTEXT, "Q?", ["spark", "full"], num_beams=2)
    with pytest.raises(ValueError, match="num_return_sequences must be 1"):
        sparkv.generate(model, tok, CONTEXT, "Q?", "spark", do_sample=True, num_return_sequences=2)
    with pytest.raises(ValueError, match="num_return_sequences must be 1"):
        sparkv.generate_many(model, tok, CONTEXT, "Q?", ["spark", "full"], num_return_sequences=2)
    with pytest.raises(ValueError, match="cache"):
        sparkv.generate(model, tok, CONTEXT, "Q?", "spark", past_key_values=DynamicCache())
