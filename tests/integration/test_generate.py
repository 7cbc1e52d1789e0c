"""sparkv.generate / generate_many end to end on tiny random models: every press of the grammar, left-padded
batches, one shared prefill for many presses, and the byte accounting."""

from __future__ import annotations

import pytest
import torch

import sparkv
from sparkv.cache.build import build_cache
from sparkv.cache.layout import num_words
from sparkv.config import EvictionConfig, PressConfig, SparKConfig, kept_channels, parse_press
from sparkv.integration.transformers import GenerationResult, Press, build_prompts
from tests.utils import CONTEXT, QUESTION, tiny_model, tiny_tokenizer

# Like kvpress' default_presses: (spec, [parse_press kwargs, easy -> hard]). Every name and pair of the grammar.
PRESS_MATRIX = [
    ("full", [{}]),
    ("spark", [dict(key_ratio=0.0), dict(key_ratio=0.5),
               *[dict(key_ratio=0.8, recovery=r) for r in ("mean_linear", "zero", "constant", "gaussian",
                                                            "exponential")],
               dict(key_ratio=0.8, saliency="paper")]),
    ("think", [dict(key_ratio=0.5), dict(key_ratio=0.8)]),
    ("snapkv", [dict(budget=200), dict(budget=80), dict(token_ratio=0.7)]),
    ("pyramidkv", [dict(budget=120), dict(budget=80)]),
    ("streamingllm", [dict(budget=80), dict(token_ratio=0.7)]),
    ("snapkv+spark", [dict(budget=80, key_ratio=0.5), dict(budget=70, key_ratio=0.8)]),
    ("snapkv+think", [dict(budget=80, key_ratio=0.5)]),
    ("pyramidkv+spark", [dict(budget=80, key_ratio=0.8)]),
    ("pyramidkv+think", [dict(budget=80, key_ratio=0.5)]),
    ("streamingllm+spark", [dict(budget=80, key_ratio=0.5)]),
    ("streamingllm+think", [dict(budget=80, key_ratio=0.5)]),
]
CASES = [(spec, kw) for spec, kws in PRESS_MATRIX for kw in kws]
IDS = [spec + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for spec, kw in CASES]
CONTEXTS = [CONTEXT, CONTEXT[60:], CONTEXT[:150] + " The end."]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def gemma():
    return tiny_model("gemma3_text")


@pytest.mark.parametrize("spec,kw", CASES, ids=IDS)
def test_every_press_runs_prefill_and_decode(llama, tok, spec, kw):
    press = parse_press(spec, **kw)
    r = sparkv.generate(llama, tok, CONTEXTS[:2], QUESTION, press, max_new_tokens=4)
    assert isinstance(r, GenerationResult) and r.press == press.name
    assert len(r.answer) == 2 and len(r.context_tokens) == 2 and all(len(t) <= 4 for t in r.token_ids)
    m = r.memory
    assert m.compressed_kv_bytes == m.allocated_kv_bytes > 0
    assert m.nominal_kv_bytes <= m.dense_kv_bytes
    assert m.compressed_layers == 2
    kept = [row["kept_tokens"] for row in m.per_layer]
    if press.eviction is not None and "budget" in kw:
        valid = sum(min(t, kw["budget"]) for t in r.context_tokens)
        if press.eviction.method == "pyramidkv":  # per-layer budgets falling around the mean budget
            assert sum(kept) / len(kept) <= valid + 2 and kept[0] >= kept[-1]
        else:
            assert kept == [valid] * 2
    elif press.eviction is None:
        assert kept == [sum(r.context_tokens)] * 2


@pytest.mark.parametrize("spec", ["spark", "snapkv+think", "streamingllm+spark"])
def test_gemma3_sliding_layers_stay_dense(gemma, tok, spec):
    r = sparkv.generate(gemma, tok, CONTEXTS[:2], QUESTION, Press(spec, budget=80), max_new_tokens=12)
    kinds = [row["kind"] for row in r.memory.per_layer]
    assert kinds == ["sliding", "compressed", "sliding", "compressed"]
    assert r.memory.compressed_kv_bytes == r.memory.allocated_kv_bytes
    # The sliding layers never hold more than window - 1 = 7 tokens per row.
    assert r.memory.per_layer[0]["kept_tokens"] == 2 * 7


def test_pyramidkv_budgets_run_over_the_compressed_layers(gemma, tok):
    """Gemma3's sliding layers stay dense, so PyramidKV's budget falls over its full-attention layers alone: they
    keep the budget on average, as SnapKV's do, from more in the first of them to fewer in the last."""
    from sparkv.methods.pyramidkv import pyramid_budgets

    r = sparkv.generate(gemma, tok, CONTEXTS[0], QUESTION, Press("pyramidkv", budget=80), max_new_tokens=2)
    kept = [row["kept_tokens"] for row in r.memory.per_layer if row["kind"] == "compressed"]
    prompt = r.context_tokens  # one context: an int
    assert prompt > 80 and kept == pyramid_budgets(80, 2, prompt_len=prompt) and sum(kept) == 2 * 80
    assert kept[0] > kept[1]
    assert [layer.pressed for layer in build_cache(gemma, None).layers[1::2]] == [(0, 2), (1, 2)]


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "qwen2"])
@pytest.mark.parametrize("spec,recovery", [("full", "mean"), ("spark", "mean"), ("snapkv+spark", "mean"),
                                           ("pyramidkv+think", "mean"), ("streamingllm+spark", "mean"),
                                           ("spark", "gaussian"), ("snapkv+spark", "exponential")])
def test_left_padded_batch_equals_single_rows(tok, arch, spec, recovery):
    """Rows of a left-padded batch answer as when run alone (sampled recoveries too: their draws ignore the row)."""
    model = tiny_model(arch)
    press = Press(spec, key_ratio=0.5, budget=80, recovery=recovery)
    batch = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=6)
    assert len(set(batch.context_tokens)) == 3  # really padded
    for i, context in enumerate(CONTEXTS):
        one = sparkv.generate(model, tok, context, QUESTION, press, max_new_tokens=6)
        assert one.context_tokens == batch.context_tokens[i]
        assert one.token_ids[0] == batch.token_ids[i], f"row {i}"
        assert one.answer == batch.answer[i]


@pytest.mark.parametrize("arch", ["llama", "gemma3_text"])
def test_generate_many_equals_separate_generate(tok, arch):
    model = tiny_model(arch)
    presses = [parse_press(s, key_ratio=0.5, budget=80) for s in
               ("full", "spark", "think", "snapkv+spark", "pyramidkv", "streamingllm+think")]
    presses.append(PressConfig(channels=SparKConfig(channel_prune_ratio=0.8, window=16)))
    many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, presses, max_new_tokens=6)
    assert [r.press for r in many] == [p.name for p in presses]
    for press, r in zip(presses, many):
        alone = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=6)
        assert r.token_ids == alone.token_ids, press.name
        assert r.answer == alone.answer and r.context_tokens == alone.context_tokens
        assert r.memory.compressed_kv_bytes == alone.memory.compressed_kv_bytes
        assert r.memory.compressed_kv_bytes == r.memory.allocated_kv_bytes


def test_generate_many_single_token_and_single_context(llama, tok):
    presses = ["full", "spark"]
    many = sparkv.generate_many(llama, tok, CONTEXT, QUESTION, presses, max_new_tokens=1)
    alone = [sparkv.generate(llama, tok, CONTEXT, QUESTION, p, max_new_tokens=1) for p in presses]
    assert [r.token_ids for r in many] == [r.token_ids for r in alone]
    assert isinstance(many[0].answer, str) and isinstance(many[0].context_tokens, int)


def test_bytes_match_the_layout_formula(llama, tok):
    """compressed == allocated == formula: SparK prefix + values + lengths + per-head u + tail buffers."""
    cfg = llama.config
    h, d, layers = cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.num_hidden_layers
    new = 5
    press = Press(PressConfig(eviction=EvictionConfig(method="snapkv", token_budget=90),
                              channels=SparKConfig(channel_prune_ratio=0.5)), tail_chunk=8)
    r = sparkv.generate(llama, tok, CONTEXTS[:2], QUESTION, press, max_new_tokens=new, min_new_tokens=new)
    b, s = 2, max(r.context_tokens)
    dk, nw, es = kept_channels(d, 0.5), num_words(d), 4
    n = 90
    prefix = b * h * n * (dk * es + 2 * nw * 4 + es) + b * h * d * 4 + b * h * n * d * es + b * 4
    tail = 2 * b * h * 8 * d * es  # new - 1 = 4 tokens fed back, capacity one chunk of 8
    assert r.memory.compressed_kv_bytes == r.memory.allocated_kv_bytes == layers * (prefix + tail)
    assert r.memory.dense_kv_bytes == layers * 2 * b * h * (s + new - 1) * d * es
    nominal = layers * (sum(min(90, t) for t in r.context_tokens) * h * 2 * d * es * 0.75 + 2 * b * h * 4 * d * es)
    assert r.memory.nominal_kv_bytes == round(nominal)
    assert r.memory.tail_reserved_bytes == layers * 2 * b * h * 4 * d * es


def test_prompt_uses_chat_template_and_answer_prefix(tok):
    [templated] = build_prompts(tok, "ctx", "q?", chat_template=True, answer_prefix="Answer:")
    assert templated == "<s><|user|>ctx\n\nq?\n<|assistant|>Answer:"
    [plain] = build_prompts(tok, "ctx", "q?", chat_template=False)
    assert plain == "ctx\n\nq?"
    assert build_prompts(tok, ["a", "b"], "q", chat_template=False) == ["a\n\nq", "b\n\nq"]
    with pytest.raises(ValueError, match="question"):
        build_prompts(tok, ["a", "b"], ["q1", "q2", "q3"])


def test_sampling_through_generate(llama, tok):
    torch.manual_seed(0)
    r = sparkv.generate(llama, tok, CONTEXTS[:2], QUESTION, Press("snapkv+spark", budget=80), max_new_tokens=5,
                        do_sample=True, temperature=0.7)
    assert len(r.token_ids) == 2
    many = sparkv.generate_many(llama, tok, CONTEXTS[:2], QUESTION, ["spark", Press("snapkv", budget=80)],
                                max_new_tokens=4, do_sample=True)
    assert len(many) == 2 and all(len(x.token_ids) == 2 for x in many)


@pytest.mark.parametrize("spec", ["full", "spark", "snapkv+spark", "think"])
def test_finished_cache_is_freed_without_cyclic_gc(llama, tok, spec):
    """A cache dropped after generation is freed by reference counting alone, so its (GPU) memory returns at once.

    Regression: each layer once kept its attention handle, and the handle the layer (a cycle): every finished
    cache stayed allocated until Python's cyclic GC ran (seen on the H200 as +4 GiB per generate call)."""
    import gc
    import weakref

    press = Press(parse_press(spec, budget=70))
    gc.collect()
    gc.disable()
    try:
        with press(llama):
            ids = torch.randint(1, 100, (1, 90))
            llama.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
        layers = [weakref.ref(layer) for layer in press.last_cache.layers]
        assert all(r() is not None for r in layers)
        press.last_cache = None
        assert all(r() is None for r in layers)
    finally:
        gc.enable()


def test_generation_options_behave_as_in_plain_transformers(llama, tok):
    """stop_strings (needs the tokenizer passed on), an EOS given through generation_config (the answer is cut there
    too), generate_many's refusals of step-dependent options, last_cache, and bad argument types."""
    from transformers import GenerationConfig

    free = sparkv.generate(llama, tok, CONTEXT, QUESTION, "full", max_new_tokens=8)
    ids = free.token_ids[0]  # one row
    assert len(ids) >= 3
    third = ids[2]
    # an EOS through generation_config: the run stops at it and the answer excludes it
    config = GenerationConfig(eos_token_id=third, max_new_tokens=8, pad_token_id=llama.generation_config.pad_token_id)
    cut = sparkv.generate(llama, tok, CONTEXT, QUESTION, "full", max_new_tokens=8, generation_config=config)
    assert cut.token_ids[0] == ids[:2]
    # stop strings reach model.generate with the tokenizer: the run stops once the text of token 2 is produced
    prompt = build_prompts(tok, CONTEXT, QUESTION)[0]
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    for stop in (tok.decode([ids[1]]), "zzz-never"):
        plain = llama.generate(**enc, max_new_tokens=8, do_sample=False, stop_strings=[stop], tokenizer=tok,
                               pad_token_id=llama.generation_config.pad_token_id)[0, enc.input_ids.shape[1]:].tolist()
        got = sparkv.generate(llama, tok, CONTEXT, QUESTION, "full", max_new_tokens=8, stop_strings=[stop])
        assert got.token_ids[0] == [t for t in plain if t != llama.generation_config.pad_token_id]
    for option in ({"stop_strings": ["x"]}, {"begin_suppress_tokens": [5]}, {"stopping_criteria": []}):
        with pytest.raises(ValueError, match="generate_many does not support"):
            sparkv.generate_many(llama, tok, CONTEXT, QUESTION, ["full", "spark"], **option)
    press = Press("spark", key_ratio=0.5)
    (result,) = sparkv.generate_many(llama, tok, CONTEXT, QUESTION, [press], max_new_tokens=4)
    assert press.memory() == result.memory
    with pytest.raises(TypeError, match="question must be a string or a list of strings, got int"):
        sparkv.generate(llama, tok, CONTEXT, 5, "full")


@pytest.mark.parametrize("spec", ["full", "snapkv+spark"])
def test_beam_search_through_generate(llama, tok, spec):
    """sparkv.generate(num_beams=...) returns the best beam: plain transformers' with the full press; with SnapKV +
    SparK the same as model.generate inside the press on the same prompt (the cache's rows are reordered every
    step)."""
    prompt = build_prompts(tok, CONTEXT, QUESTION)[0]
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    pad = llama.generation_config.pad_token_id
    press = Press(spec, key_ratio=0.8, token_ratio=0.5) if "+" in spec else Press(spec)
    if spec == "full":
        want = llama.generate(**enc, max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=pad)
    else:
        with press(llama):
            want = llama.generate(**enc, max_new_tokens=8, num_beams=3, do_sample=False, pad_token_id=pad)
    got = sparkv.generate(llama, tok, CONTEXT, QUESTION, press, max_new_tokens=8, num_beams=3)
    assert got.token_ids[0] == [t for t in want[0, enc.input_ids.shape[1]:].tolist() if t != pad]
    assert got.memory.compressed_kv_bytes == got.memory.allocated_kv_bytes  # three compressed rows, counted


def test_padding_among_the_new_tokens_is_refused(llama, tok):
    """A second turn whose rows are padded inside the new tokens: sparkv attends to every token after the prompt,
    so it refuses instead of attending to the pads (plain transformers masks them)."""
    from tests.utils import PAD, encode

    ids, mask = encode(tok, [CONTEXT, CONTEXT[:150]])
    press = Press("full")
    with press(llama):
        cache = press.make_cache(llama)
        first = llama.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD,
                               past_key_values=cache)
        turn2 = torch.full((2, 6), 7)
        turn2_mask = torch.ones_like(turn2)
        turn2_mask[1, :3] = 0
        seq = torch.cat([first, turn2], 1)
        am = torch.cat([mask, torch.ones(2, first.shape[1] - ids.shape[1], dtype=mask.dtype), turn2_mask], 1)
        with pytest.raises(ValueError, match="zeros after the prompt"):
            llama.generate(seq, attention_mask=am, max_new_tokens=2, do_sample=False, pad_token_id=PAD,
                           past_key_values=cache)


def test_options_a_sparkv_cache_cannot_serve_are_refused_wherever_they_are_set(llama, tok):
    from transformers import GenerationConfig

    from tests.utils import PAD, encode

    cases = [({"use_cache": False}, "use_cache=False"),
             ({"generation_config": GenerationConfig(num_return_sequences=2, do_sample=True)}, "num_return_sequences"),
             ({"generation_config": GenerationConfig(use_cache=False)}, "use_cache=False"),
             ({"assistant_early_exit": 1}, "assistant_early_exit is not supported"),
             ({"assistant_model": llama}, "assistant_model is the pressed model itself")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark", **kwargs)
    with pytest.raises(ValueError, match="prefill_chunk_size is not supported by generate_many"):
        sparkv.generate_many(llama, tok, CONTEXT, QUESTION, ["spark"],
                             generation_config=GenerationConfig(prefill_chunk_size=64))
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens .* not supported by generate_many"):
        sparkv.generate_many(llama, tok, CONTEXT, QUESTION, ["spark"],
                             generation_config=GenerationConfig(prompt_lookup_num_tokens=3))
    with pytest.raises(ValueError, match="prompt_lookup_num_tokens needs num_beams=1"):
        sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark", prompt_lookup_num_tokens=3, num_beams=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_beams must be an integer >= 1"):
            sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark", num_beams=bad)
    # Arguments of the wrong type are named, not read as truthy strings or failed on deep inside.
    for kwargs, message in (({"do_sample": "yes"}, "do_sample must be True, False or None"),
                            ({"chat_template": "no"}, "chat_template must be True or False"),
                            ({"answer_prefix": None}, "answer_prefix must be a string")):
        with pytest.raises(TypeError, match=message):
            sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark", **kwargs)
    for one in ("spark", Press("spark")):
        with pytest.raises(TypeError, match="presses must be a list of presses"):
            sparkv.generate_many(llama, tok, CONTEXT, QUESTION, one)
    ids, mask = encode(tok, [CONTEXT])
    press = Press("spark")
    with press(llama), pytest.raises(ValueError, match="use_cache=False"):
        llama.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD, use_cache=False)


@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_chunked_prefill_through_generate(llama, tok, spec):
    """sparkv.generate(prefill_chunk_size=...) announces the prompt to the cache and answers as one prefill does."""
    press = Press(spec, key_ratio=0.5, token_ratio=0.5) if "+" in spec else Press(spec, key_ratio=0.5)
    one = sparkv.generate(llama, tok, [CONTEXT, CONTEXT[60:]], QUESTION, press, max_new_tokens=8)
    chunked = sparkv.generate(llama, tok, [CONTEXT, CONTEXT[60:]], QUESTION, press, max_new_tokens=8,
                              prefill_chunk_size=48)
    assert chunked.token_ids == one.token_ids
    assert chunked.memory.compressed_kv_bytes == one.memory.compressed_kv_bytes == chunked.memory.allocated_kv_bytes


def test_prompt_lookup_through_generate(llama, tok):
    """sparkv.generate(prompt_lookup_num_tokens=...) announces the prompt, so the candidates verified in its forward
    join the decode tail: the answer is greedy decoding's."""
    press = Press("snapkv+spark", key_ratio=0.5, token_ratio=0.5)
    greedy = sparkv.generate(llama, tok, CONTEXT, QUESTION, press, max_new_tokens=12)
    lookup = sparkv.generate(llama, tok, CONTEXT, QUESTION, press, max_new_tokens=12, prompt_lookup_num_tokens=3)
    assert lookup.token_ids == greedy.token_ids
    assert lookup.memory.compressed_kv_bytes == greedy.memory.compressed_kv_bytes


def test_generation_config_length_and_sampling_are_honoured(llama, tok):
    """max_new_tokens / do_sample come from a generation_config when not given as arguments."""
    from transformers import GenerationConfig

    res = sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark",
                          generation_config=GenerationConfig(max_new_tokens=3, do_sample=False))
    assert len(res.token_ids[0]) <= 3
    greedy = sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark", max_new_tokens=6)
    sampled = [sparkv.generate(llama, tok, CONTEXT, QUESTION, "spark",
                               generation_config=GenerationConfig(max_new_tokens=6, do_sample=True, temperature=5.0,
                                                                  top_k=0))
               for _ in range(3)]
    assert any(s.token_ids[0] != greedy.token_ids[0] for s in sampled)


def test_press_options_need_a_spec_and_tail_chunk_is_an_integer():
    with pytest.raises(TypeError, match="need a press spec"):
        Press(key_ratio=0.8)
    with pytest.raises(ValueError, match="tail_chunk must be an integer"):
        Press("spark", tail_chunk=True)


def test_a_checkpoint_shipping_use_cache_false_still_compresses(tok):
    """Many checkpoints set use_cache=False in their config; sparkv passes its cache and turns it on."""
    model = tiny_model("llama")
    model.config.use_cache = False
    model.generation_config.use_cache = False
    res = sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", max_new_tokens=4)
    dense = sparkv.generate(model, tok, CONTEXT, QUESTION, "full", max_new_tokens=4)
    assert res.memory.compressed_kv_bytes < dense.memory.compressed_kv_bytes
    from tests.utils import PAD, encode

    ids, mask = encode(tok, [CONTEXT])
    press = Press("spark")
    with press(model):
        model.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD)
    assert press.memory().compressed_kv_bytes < dense.memory.compressed_kv_bytes



def test_cache_operations_that_would_damage_it_are_refused_first(gemma, tok):
    """crop on a Gemma3 cache (dense sliding layers + sparkv layers) is refused before any layer changes; pickling
    is refused (deepcopy works); a failed prefill leaves the cache empty; a step with another batch size is refused
    before anything is written."""
    import copy
    import pickle

    from tests.utils import PAD, encode

    ids, mask = encode(tok, [CONTEXT])
    press = Press("spark")
    with press(gemma):
        gemma.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD)
    cache = press.last_cache
    lengths = [layer.get_seq_length() for layer in cache.layers]
    with pytest.raises(NotImplementedError, match="cannot be cropped"):
        cache.crop(-2)
    assert [layer.get_seq_length() for layer in cache.layers] == lengths
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(cache)
    assert copy.deepcopy(cache).get_seq_length() == cache.get_seq_length()


def test_a_step_with_another_batch_size_is_refused_before_anything_is_written(llama, tok):
    from tests.utils import PAD, encode

    two, two_mask = encode(tok, [CONTEXT, CONTEXT[:200]])
    press = Press("spark")
    with press(llama):
        llama.generate(two, attention_mask=two_mask, max_new_tokens=2, pad_token_id=PAD)
    cache = press.last_cache
    lengths = [layer.get_seq_length() for layer in cache.layers]
    with press(llama), pytest.raises(ValueError, match="batch rows"):
        llama(two[:1, -1:], past_key_values=cache)
    assert [layer.get_seq_length() for layer in cache.layers] == lengths


def test_a_failed_prefill_leaves_the_cache_reusable(llama, tok):
    from tests.utils import PAD, encode

    press = Press("snapkv", budget=128)
    cache = press.make_cache(llama)
    short, short_mask = encode(tok, ["too short"])
    with press(llama), pytest.raises(ValueError):
        llama(short, attention_mask=short_mask, past_key_values=cache)
    assert cache.get_seq_length() == 0
    ids, mask = encode(tok, [CONTEXT])
    with press(llama):
        llama.generate(ids, attention_mask=mask, max_new_tokens=2, pad_token_id=PAD, past_key_values=cache)
    assert cache.get_seq_length() > 0
