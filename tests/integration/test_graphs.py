"""Graph decoding (sparkv.integration.graphs): the static step, run eagerly on the CPU, gives model.generate's
greedy tokens; the captured graph does the same on a GPU; what it cannot serve is refused."""

from __future__ import annotations

import pytest
import torch

import sparkv
from sparkv.integration.graphs import greedy_decode
from sparkv.integration.transformers import (
    Press,
    _encode,
    _generate_kwargs,
    _prefill_then_graph,
    use_sparkv_attention,
)
from tests.utils import CONTEXT, QUESTION, cache_kwarg, tiny_model, tiny_tokenizer

CONTEXTS = [CONTEXT, CONTEXT[60:], CONTEXT[:150] + " The end."]
PRESSES = [("full", {}), ("spark", dict(key_ratio=0.5)), ("spark", dict(key_ratio=0.8, recovery="zero")),
           ("snapkv+spark", dict(budget=80, key_ratio=0.8)), ("think", dict(key_ratio=0.5))]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _static_path(model, tok, contexts, press: Press, max_new_tokens: int) -> tuple[torch.Tensor, object]:
    """generate()'s cuda_graph branch with capture=False: the same static step, eagerly (any device)."""
    batch = _encode(model, tok, contexts, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        new = _prefill_then_graph(model, batch, cache, max_new_tokens, kwargs, eos=set(), capture=False)
    return new, cache


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("spec,kw", PRESSES, ids=[s + "-" + "-".join(f"{k}={v}" for k, v in kw.items())
                                                  for s, kw in PRESSES])
def test_static_step_gives_the_tokens_of_generate(tok, arch, spec, kw):
    """A left-padded batch of three rows: the static tail, device-side counters and positions reproduce
    model.generate's greedy tokens, and the cache ends as generate leaves it."""
    model = tiny_model(arch)
    press = Press(spec, tail_chunk=4, **kw)
    eager = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=12, eos_token_id=[])
    eager_cache = press.last_cache
    new, cache = _static_path(model, tok, CONTEXTS, press, 12)
    assert new.shape == (3, 12)
    assert new.tolist() == [row for row in eager.token_ids]
    for a, b in zip(eager_cache.layers, cache.layers):
        assert b.static_tail is None and b.tail_len == a.tail_len == 11
        assert b.get_seq_length() == a.get_seq_length()
        # Equal up to float32 rounding: the static step's matmuls run over the tail's whole capacity (masked).
        torch.testing.assert_close(b.tail()[0], a.tail()[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.tail()[1], a.tail()[1], rtol=1e-5, atol=1e-5)


def test_generate_and_generate_many_wire_the_graph_path(tok, monkeypatch):
    """generate / generate_many(cuda_graph=True), with the CUDA-only check lifted and the step run eagerly
    (capture=False), give the eager tokens: left-padded batch, two presses sharing one prefill."""
    from sparkv.integration import graphs
    from sparkv.integration import transformers as glue

    calls = []
    eager_decode = graphs.greedy_decode

    def uncaptured(*args, **kwargs):
        calls.append(kwargs.get("capture"))
        return eager_decode(*args, **{**kwargs, "capture": False})

    model = tiny_model("llama")
    presses = [Press("spark", key_ratio=0.5), Press("snapkv+spark", budget=80, key_ratio=0.8)]
    eager_many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, presses, max_new_tokens=9, eos_token_id=[])
    eager_one = sparkv.generate(model, tok, CONTEXTS, QUESTION, presses[0], max_new_tokens=9, eos_token_id=[])
    monkeypatch.setattr(glue, "_check_graph_options", lambda *a: None)
    monkeypatch.setattr(graphs, "greedy_decode", uncaptured)
    many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, presses, max_new_tokens=9, eos_token_id=[],
                                cuda_graph=True)
    one = sparkv.generate(model, tok, CONTEXTS, QUESTION, presses[0], max_new_tokens=9, eos_token_id=[],
                          cuda_graph=True)
    assert calls == [True, True, True]  # the public paths ask for a capture
    assert [r.token_ids for r in many] == [r.token_ids for r in eager_many]
    assert one.token_ids == eager_one.token_ids
    # The same bytes held; only the tail's reserve differs (the graph sizes it to the steps, eager grows by chunks).
    held = [[r.memory.compressed_kv_bytes - r.memory.tail_reserved_bytes for r in rs] for rs in (many, eager_many)]
    assert held[0] == held[1]
    assert all(r.memory.tail_reserved_bytes < e.memory.tail_reserved_bytes for r, e in zip(many, eager_many))


def test_decoding_can_continue_eagerly_after_the_graph(tok):
    """After greedy_decode the cache is a normal growing cache again: an eager step continues from it."""
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5, tail_chunk=4)
    new, cache = _static_path(model, tok, CONTEXT, press, 6)
    eager = sparkv.generate(model, tok, CONTEXT, QUESTION, press, max_new_tokens=7, eos_token_id=[])
    positions = torch.tensor([[cache.layers[0].prompt_len + 5]])  # new[:, i] sits at prompt_len + i
    with use_sparkv_attention(model), torch.no_grad():
        logits = model(input_ids=new[:, -1:], position_ids=positions, **{cache_kwarg(model): cache}).logits
    assert logits[0, -1].argmax().item() == eager.token_ids[0][6]
    assert cache.layers[0].tail_len == 6  # 5 tokens fed by the static steps, 1 by this eager one


def test_stops_once_every_row_has_ended(tok):
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5)
    full, _ = _static_path(model, tok, CONTEXT, press, 20)
    stop = int(full[0, 5])  # pretend the 6th token is the end of sequence
    batch = _encode(model, tok, CONTEXT, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        new = _prefill_then_graph(model, batch, cache, 20, kwargs, eos={stop}, capture=False)
    first = full[0].tolist().index(stop)
    assert new[0, : first + 1].tolist() == full[0, : first + 1].tolist()
    # checked every 16 steps: stopped at the first check after the end, not run to 20
    assert first < new.shape[1] <= max(first + 1, 17) and new.shape[1] < 20


def test_what_graph_decoding_cannot_serve_is_refused(tok):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be True or False"):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph="yes")
    with pytest.raises(ValueError, match="cuda_graph=True needs the model on a CUDA device"):
        sparkv.generate_many(model, tok, CONTEXT, QUESTION, ["spark"], cuda_graph=True)
    gemma = tiny_model("gemma3_text")
    press = Press("spark", key_ratio=0.5)
    batch = _encode(gemma, tok, CONTEXT, QUESTION, True)
    with press(gemma):
        cache = press.make_cache(gemma)
        gemma(batch.input_ids, **{cache_kwarg(gemma): cache})
        with pytest.raises(ValueError, match="every cache layer to be a sparkv PressedLayer"):
            greedy_decode(gemma, cache, batch.input_ids[:, -1:], batch.attention_mask.sum(-1), 4, capture=False)
    press = Press("spark", key_ratio=0.5)
    with press(model):
        cache = press.make_cache(model)
        with pytest.raises(ValueError, match="starts after prefill"):
            greedy_decode(model, cache, batch.input_ids[:, -1:], batch.attention_mask.sum(-1), 4, capture=False)
        model(batch.input_ids, **{cache_kwarg(model): cache})
        with pytest.raises(ValueError, match="capture=True .* needs the model on a CUDA device"):
            greedy_decode(model, cache, batch.input_ids[:, -1:], batch.attention_mask.sum(-1), 4)
        with pytest.raises(ValueError, match=r"first_tokens must be \[B, 1\]"):
            greedy_decode(model, cache, batch.input_ids[:, -2:], batch.attention_mask.sum(-1), 4, capture=False)
        with pytest.raises(ValueError, match="steps must be an integer >= 0"):
            greedy_decode(model, cache, batch.input_ids[:, -1:], batch.attention_mask.sum(-1), -1, capture=False)


@pytest.mark.parametrize("options,match", [
    (dict(do_sample=True), "decodes greedily"),
    (dict(repetition_penalty=1.3), "takes no generation options"),
])
def test_sampling_and_processors_are_refused_with_graphs(tok, monkeypatch, options, match):
    model = tiny_model("llama")
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda", 0)))
    with pytest.raises(ValueError, match=match):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph=True, **options)
    model.generation_config.no_repeat_ngram_size = 3
    with pytest.raises(ValueError, match="no_repeat_ngram_size=3"):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph=True)


@pytest.mark.gpu
@pytest.mark.parametrize("spec,kw", [("spark", dict(key_ratio=0.5)), ("spark", dict(key_ratio=0.8)),
                                     ("snapkv+spark", dict(budget=80, key_ratio=0.8)), ("full", {})])
def test_cuda_graph_generate_equals_eager_generate(tok, spec, kw):
    """On a GPU, with the real kernels (CUDA prefix kernel, Triton tail with its device-side length): the graph's
    greedy tokens are the eager run's, for a left-padded batch."""
    model = tiny_model("llama", dtype=torch.bfloat16).to("cuda")
    press = Press(spec, **kw)
    eager = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=24, eos_token_id=[])
    graph = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=24, eos_token_id=[],
                            cuda_graph=True)
    assert graph.token_ids == eager.token_ids
    assert press.last_cache.layers[0].tail_len == 23
    many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, [press], max_new_tokens=24, eos_token_id=[],
                                cuda_graph=True)
    assert many[0].token_ids == eager.token_ids


@pytest.mark.gpu
@pytest.mark.parametrize("spec,kw", [("spark", dict(key_ratio=0.5)), ("snapkv+spark", dict(budget=96, key_ratio=0.8))])
def test_captured_steps_equal_eager_static_steps_on_the_cuda_kernel(tok, monkeypatch, spec, kw):
    """head_dim 64: the prefix goes through the CUDA kernel. With the splits merged by the combine kernel on eager
    steps too (as in a capture), the graph's tokens equal the static step's run eagerly, from copies of one cache."""
    import copy

    from sparkv.kernels.decode_attn import cuda, fused

    monkeypatch.setattr(cuda.SplitPlan, "merges_itself", lambda self, slots: False)
    model = tiny_model("llama", dtype=torch.bfloat16, head_dim=64).to("cuda")
    press = Press(spec, **kw)
    batch = _encode(model, tok, CONTEXTS, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=1,
                             **{cache_kwarg(model): cache}, **kwargs)
        first = out[:, batch.input_ids.shape[1]:]
        positions = batch.attention_mask.sum(-1)
        eager = greedy_decode(model, copy.deepcopy(cache), first, positions, 20, capture=False)
        assert fused.LAST_LAUNCH.get("spark_kernel") == "cuda"
        graph = greedy_decode(model, cache, first, positions, 20, capture=True)
    assert torch.equal(graph, eager)
    assert cache.layers[0].tail_len == 20 and cache.layers[0].static_tail is None
