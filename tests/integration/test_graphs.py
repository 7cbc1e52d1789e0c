"""Graph decoding (sparkv.integration.graphs): the static step, run eagerly on the CPU (``capture=False``), gives
model.generate's tokens, greedy and sampled, through both drivers; the captured graph does the same on a GPU; what
it cannot serve is refused."""

from __future__ import annotations

import copy

import pytest
import torch

import sparkv
from sparkv.cache.layout import SparKPages
from sparkv.integration import graphs
from sparkv.integration import transformers as glue
from sparkv.integration.graphs import greedy_decode, replay_decode_steps
from sparkv.integration.transformers import Press, _encode, _generate_kwargs, use_sparkv_attention
from tests.utils import CONTEXT, QUESTION, cache_kwarg, tiny_model, tiny_tokenizer

CONTEXTS = [CONTEXT, CONTEXT[60:], CONTEXT[:150] + " The end."]
PRESSES = [("full", {}), ("spark", dict(key_ratio=0.5)), ("spark", dict(key_ratio=0.8, recovery="zero")),
           ("snapkv+spark", dict(budget=80, key_ratio=0.8)), ("think", dict(key_ratio=0.5))]
IDS = [s + "-" + "-".join(f"{k}={v}" for k, v in kw.items()) for s, kw in PRESSES]


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _replayed_generate(model, tok, contexts, press: Press, max_new_tokens: int, **gen):
    """``model.generate`` under ``replay_decode_steps(capture=False)``: its one-token steps run the static step."""
    batch = _encode(model, tok, contexts, QUESTION, True)
    kwargs = _generate_kwargs(batch, gen.pop("do_sample", False), gen, tok, model)
    with press(model):
        cache = press.make_cache(model)
        with replay_decode_steps(model, cache, max_new_tokens - 1, capture=False) as stats:
            out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens,
                                 **{cache_kwarg(model): cache}, **kwargs)
    new = out[:, batch.input_ids.shape[1]:]
    assert stats.steps == new.shape[1] - 1  # every one-token forward went through the static step
    return new, cache


def _greedy_loop(model, tok, contexts, press: Press, max_new_tokens: int, eos=None, capture=False):
    """The first token by ``model.generate``, the rest by :func:`greedy_decode` (the host-free loop)."""
    batch = _encode(model, tok, contexts, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=1,
                             **{cache_kwarg(model): cache}, **kwargs)
        first = out[:, batch.input_ids.shape[1]:]
        rest = greedy_decode(model, cache, first, batch.attention_mask.sum(-1), max_new_tokens - 1, eos,
                             capture=capture)
    return torch.cat([first, rest], dim=1), cache


def _assert_same_cache(a, b):
    for x, y in zip(a.layers, b.layers):
        assert y.static_tail is None and y.tail_len == x.tail_len
        assert y.get_seq_length() == x.get_seq_length()
        # Equal up to float32 rounding: the static step's matmuls run over the tail's whole capacity (masked).
        torch.testing.assert_close(y.tail()[0], x.tail()[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y.tail()[1], x.tail()[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("spec,kw", PRESSES, ids=IDS)
def test_static_step_gives_the_tokens_of_generate(tok, arch, spec, kw):
    """A left-padded batch of three rows: the static tail, device-side counters and positions reproduce
    model.generate's greedy tokens through both drivers, and the cache ends as generate leaves it."""
    model = tiny_model(arch)
    press = Press(spec, tail_chunk=4, **kw)
    eager = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=12, eos_token_id=[])
    eager_cache = press.last_cache
    replayed, cache = _replayed_generate(model, tok, CONTEXTS, press, 12, eos_token_id=[])
    assert replayed.tolist() == eager.token_ids
    _assert_same_cache(eager_cache, cache)
    looped, cache = _greedy_loop(model, tok, CONTEXTS, press, 12)
    assert looped.shape == (3, 12) and looped.tolist() == eager.token_ids
    _assert_same_cache(eager_cache, cache)


def test_sampling_and_processors_go_through_the_replayed_steps(tok):
    """transformers' own sampling and logits processors run on the replayed logits: with one seed, the same
    sampled tokens as eager generation (float32 on the CPU: the logits are equal)."""
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5)
    options = dict(do_sample=True, temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3, eos_token_id=[])
    torch.manual_seed(3)
    eager = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, max_new_tokens=10, **options)
    torch.manual_seed(3)
    replayed, _ = _replayed_generate(model, tok, CONTEXTS, press, 10, **options)
    assert replayed.tolist() == eager.token_ids
    torch.manual_seed(4)
    other, _ = _replayed_generate(model, tok, CONTEXTS, press, 10, **options)
    assert other.tolist() != eager.token_ids  # the draws matter: the check above can fail


def test_generate_and_generate_many_wire_the_graph_path(tok, monkeypatch):
    """generate / generate_many(cuda_graph=True), with the CUDA-only check lifted and capture off, give the eager
    tokens: left-padded batch, two presses sharing one prefill."""
    calls = []
    real = graphs.replay_decode_steps

    def uncaptured(model, cache, steps, capture=True):
        calls.append((steps, capture))
        return real(model, cache, steps, capture=False)

    model = tiny_model("llama")
    presses = [Press("spark", key_ratio=0.5), Press("snapkv+spark", budget=80, key_ratio=0.8)]
    eager_many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, presses, max_new_tokens=9, eos_token_id=[])
    eager_one = sparkv.generate(model, tok, CONTEXTS, QUESTION, presses[0], max_new_tokens=9, eos_token_id=[])
    monkeypatch.setattr(glue, "_check_graph_options", lambda model, cuda_graph: None)
    monkeypatch.setattr(graphs, "replay_decode_steps", uncaptured)
    many = sparkv.generate_many(model, tok, CONTEXTS, QUESTION, presses, max_new_tokens=9, eos_token_id=[],
                                cuda_graph=True)
    one = sparkv.generate(model, tok, CONTEXTS, QUESTION, presses[0], max_new_tokens=9, eos_token_id=[],
                          cuda_graph=True)
    assert calls == [(8, True), (8, True), (8, True)]  # the public paths ask for a capture
    assert [r.token_ids for r in many] == [r.token_ids for r in eager_many]
    assert one.token_ids == eager_one.token_ids
    # The same bytes held; only the tail's reserve differs (the graph sizes it to the steps, eager grows by chunks).
    held = [[r.memory.compressed_kv_bytes - r.memory.tail_reserved_bytes for r in rs] for rs in (many, eager_many)]
    assert held[0] == held[1]


def test_decoding_can_continue_eagerly_after_the_graph(tok):
    """After the block the cache is a normal growing cache again: an eager step continues from it."""
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5, tail_chunk=4)
    new, cache = _replayed_generate(model, tok, CONTEXT, press, 6, eos_token_id=[])
    eager = sparkv.generate(model, tok, CONTEXT, QUESTION, press, max_new_tokens=7, eos_token_id=[])
    positions = torch.tensor([[cache.layers[0].prompt_len + 5]])  # new[:, i] sits at prompt_len + i
    with use_sparkv_attention(model), torch.no_grad():
        logits = model(input_ids=new[:, -1:], position_ids=positions, **{cache_kwarg(model): cache}).logits
    assert logits[0, -1].argmax().item() == eager.token_ids[0][6]
    assert cache.layers[0].tail_len == 6  # 5 tokens fed by the static steps, 1 by this eager one
    assert "forward" not in model.__dict__  # the model's own forward is back


def test_the_greedy_loop_stops_once_every_row_has_ended(tok):
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5)
    full, _ = _greedy_loop(model, tok, CONTEXT, press, 20)
    stop = int(full[0, 5])  # pretend the 6th token is the end of sequence
    new, cache = _greedy_loop(model, tok, CONTEXT, press, 20, eos={stop})
    first = full[0].tolist().index(stop)
    assert new[0, : first + 1].tolist() == full[0, : first + 1].tolist()
    # checked every 16 steps: stopped at the first check after the end, not run to 20
    assert first < new.shape[1] <= max(first + 1, 17) and new.shape[1] < 20
    assert cache.layers[0].tail_len == new.shape[1] - 1


def test_more_steps_than_reserved_are_refused(tok):
    model = tiny_model("llama")
    press = Press("spark", key_ratio=0.5)
    batch = _encode(model, tok, CONTEXT, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {"eos_token_id": []}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        with pytest.raises(RuntimeError, match="more than steps=3 one-token forwards"):
            with replay_decode_steps(model, cache, 3, capture=False):
                model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=6,
                               **{cache_kwarg(model): cache}, **kwargs)
    assert cache.layers[0].tail_len == 3 and cache.layers[0].static_tail is None


def test_what_graph_decoding_cannot_serve_is_refused(tok):
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="cuda_graph=True needs the whole model on one CUDA device"):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True needs the whole model on one CUDA device"):
        sparkv.generate_many(model, tok, CONTEXT, QUESTION, ["spark"], cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be True or False"):
        sparkv.generate(model, tok, CONTEXT, QUESTION, "spark", cuda_graph="yes")
    with pytest.raises(ValueError, match="graph decoding covers models whose every layer is full attention"):
        graphs.check_graph_decodable(tiny_model("gemma3_text"))
    with pytest.raises(ValueError, match="cuda_graph=True needs the whole model on one CUDA device"):
        graphs.check_graph_decodable(model)
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
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            with replay_decode_steps(model, cache, 0):
                pass


@pytest.mark.gpu
@pytest.mark.parametrize("spec,kw", [("spark", dict(key_ratio=0.5)), ("spark", dict(key_ratio=0.8)),
                                     ("snapkv+spark", dict(budget=80, key_ratio=0.8)), ("full", {})])
def test_cuda_graph_generate_equals_eager_generate(tok, spec, kw):
    """On a GPU with the real kernels (head_dim 16: the Triton SparK kernel; the Triton tail with its device-side
    length): the graph's tokens are the eager run's, greedy and sampled (one seed), for a left-padded batch, through
    generate, generate_many and the host-free loop. (The Triton kernel's timed launch is kept per size class of the
    prefix alone, so both runs use one choice: with the tail counted, eager steps and the graph reached the classes at
    different steps, and two launches flipped a bf16 near-tie at the 18th of 24 tokens on one H200, 2026-11-30.)"""
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
    looped, _ = _greedy_loop(model, tok, CONTEXTS, press, 24, capture=True)
    assert looped.tolist() == eager.token_ids
    options = dict(do_sample=True, temperature=0.8, top_p=0.95, max_new_tokens=24, eos_token_id=[])
    torch.manual_seed(5)
    sampled = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, **options)
    torch.manual_seed(5)
    sampled_graph = sparkv.generate(model, tok, CONTEXTS, QUESTION, press, cuda_graph=True, **options)
    assert sampled_graph.token_ids == sampled.token_ids


@pytest.mark.gpu
@pytest.mark.parametrize("spec,kw", [("spark", dict(key_ratio=0.5)), ("snapkv+spark", dict(budget=96, key_ratio=0.8))])
def test_captured_steps_equal_eager_static_steps_on_the_cuda_kernel(tok, monkeypatch, spec, kw):
    """head_dim 64: the prefix goes through the CUDA kernel. With the splits merged by the combine kernel on eager
    steps too (as in a capture), the graph's tokens equal the static step's run eagerly, from copies of one cache,
    in both drivers."""
    from sparkv.kernels.decode_attn import cuda, fused

    monkeypatch.setattr(cuda.SplitPlan, "merges_itself", lambda self, slots: False)
    model = tiny_model("llama", dtype=torch.bfloat16, head_dim=64).to("cuda")
    press = Press(spec, **kw)
    batch = _encode(model, tok, CONTEXTS, QUESTION, True)
    kwargs = _generate_kwargs(batch, False, {"eos_token_id": []}, tok, model)
    with press(model):
        cache = press.make_cache(model)
        out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=1,
                             **{cache_kwarg(model): cache}, **kwargs)
        first = out[:, batch.input_ids.shape[1]:]
        positions = batch.attention_mask.sum(-1)
        start = copy.deepcopy(cache)
        eager = greedy_decode(model, copy.deepcopy(start), first, positions, 20, capture=False)
        assert fused.LAST_LAUNCH.get("spark_kernel") == "cuda"
        assert isinstance(cache.layers[0].prefix, SparKPages)  # the form the CUDA kernel reads
        graph = greedy_decode(model, cache, first, positions, 20, capture=True)
        assert torch.equal(graph, eager)
        assert cache.layers[0].tail_len == 20 and cache.layers[0].static_tail is None
        runs = []
        for capture in (False, True):
            c = copy.deepcopy(start)
            ids = torch.cat([batch.input_ids, first], 1)
            mask = torch.cat([batch.attention_mask, torch.ones_like(first)], 1)
            with replay_decode_steps(model, c, 19, capture=capture):
                runs.append(model.generate(ids, attention_mask=mask, max_new_tokens=19, **{cache_kwarg(model): c},
                                           **kwargs)[:, ids.shape[1]:])
        assert torch.equal(runs[0], runs[1])


@pytest.mark.gpu
def test_graph_decoding_holds_no_memory_once_it_returns(tok):
    """Every capture warms up on one side stream a device: with a new stream each generation, cuBLAS kept one more
    workspace (32 MiB on an H200) allocated after every graph-decoded generation (BENCHMARKS.md, "Session 35")."""
    model = tiny_model("llama", dtype=torch.bfloat16).to("cuda")
    press = Press("spark", key_ratio=0.5)
    held = []
    for _ in range(4):
        tokens, cache = _greedy_loop(model, tok, CONTEXTS, press, 8, capture=True)
        assert tokens.shape[1] == 8
        del tokens, cache
        torch.cuda.synchronize()
        held.append(torch.cuda.memory_allocated())
    assert held[1] == held[2] == held[3], f"bytes allocated after each generation: {held}"
