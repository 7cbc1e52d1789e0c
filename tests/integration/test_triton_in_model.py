"""The Triton backend inside real (tiny, random) models: same compressed layout and same logits as the PyTorch
backend. On CUDA everything runs; on the CPU the ``interpret`` cases run under ``TRITON_INTERPRET=1`` (set by
``tests/conftest.py``; ~30 s, on short texts) and the ``gpu`` ones are skipped.
"""

from __future__ import annotations

import os

import pytest
import torch

from sparkv.cache.layer import PressedLayer
from sparkv.cache.layout import SparKKeys, SparKPages
from sparkv.integration.transformers import Press, use_sparkv_attention
from tests.utils import CONTEXT, PAD, encode, teacher_forced_logits, tiny_model, tiny_tokenizer


def device_or_skip() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    pytest.skip("needs CUDA or TRITON_INTERPRET=1")


@torch.no_grad()
def run(model, ids, mask, spec, backend, forced):
    press = Press(spec, key_ratio=0.5, budget=100, backend=backend)
    with use_sparkv_attention(model):
        logits = teacher_forced_logits(model, ids, mask, press.make_cache(model), forced)
    return logits, press.last_cache


@pytest.mark.parametrize("arch,spec", [
    # The CPU cases (the interpreter, short texts); on CUDA they run too, outside the gpu tier's `-m gpu`.
    pytest.param("llama", "spark", marks=pytest.mark.interpret, id="llama-spark"),
    pytest.param("qwen3", "snapkv+spark", marks=pytest.mark.interpret, id="qwen3-snapkv+spark"),
    pytest.param("gemma3_text", "spark", marks=pytest.mark.interpret, id="gemma3_text-spark"),
    # The gpu tier's (skipped without CUDA).
    pytest.param("qwen3", "snapkv+spark", marks=pytest.mark.gpu, id="gpu-qwen3-snapkv+spark"),
    pytest.param("gemma3_text", "spark", marks=pytest.mark.gpu, id="gpu-gemma3_text-spark"),
])
def test_triton_matches_torch_inside_the_model(arch, spec):
    device = device_or_skip()
    tok = tiny_tokenizer()
    model = tiny_model(arch, dtype=torch.bfloat16).to(device)
    # Short on the CPU: the interpreter runs every Triton program one at a time.
    text = CONTEXT if device == "cuda" else CONTEXT[:110]
    ids, mask = encode(tok, [text, text[30:]], device)
    forced = torch.tensor([[11, 12], [21, 22]], device=device)
    ref, ref_cache = run(model, ids, mask, spec, "torch", forced)
    got, got_cache = run(model, ids, mask, spec, "triton", forced)
    torch.testing.assert_close(got[0], ref[0], rtol=0, atol=0)  # prefill attention is the same sdpa call
    for a, b in zip(ref_cache.layers, got_cache.layers):
        if not isinstance(a, PressedLayer):
            continue
        held = b.prefix.to_compressed() if isinstance(b.prefix, SparKPages) else b.prefix  # pages where CUDA decodes
        ka, kb = a.prefix.keys, held.keys
        assert isinstance(kb, SparKKeys) and torch.equal(a.prefix.values, held.values)
        assert torch.equal(ka.kept_bits, kb.kept_bits) and torch.equal(ka.sign_bits, kb.sign_bits)
        torch.testing.assert_close(kb.kept_values, ka.kept_values, rtol=0, atol=0)
        torch.testing.assert_close(kb.scale.float(), ka.scale.float(), rtol=1e-2, atol=1e-3)
        assert b.prefix.nbytes() == b.prefix.allocated_bytes()
    for r, g in zip(ref[1:], got[1:]):
        scale = r.float().abs().max().item()
        assert (g.float() - r.float()).abs().max().item() <= 2e-2 * max(scale, 1.0)


@pytest.mark.parametrize("tier", [pytest.param("cpu", marks=pytest.mark.interpret),
                                  pytest.param("gpu", marks=pytest.mark.gpu)])
def test_lambda_zero_bf16_triton_matches_dense(tier):
    """λ = 0 in bf16 through the Triton decode kernel stays close to a plain bf16 DynamicCache run."""
    from transformers import DynamicCache

    device = device_or_skip()
    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16).to(device)
    ids, mask = encode(tok, [CONTEXT], device)
    forced = torch.tensor([[5, 6, 7]], device=device)
    ref = teacher_forced_logits(model, ids, mask, DynamicCache(config=model.config), forced)
    press = Press("spark", key_ratio=0.0, backend="triton")
    with use_sparkv_attention(model):
        got = teacher_forced_logits(model, ids, mask, press.make_cache(model), forced)
    for r, g in zip(ref[1:], got[1:]):
        assert (g.float() - r.float()).abs().max().item() <= 2e-2 * max(r.float().abs().max().item(), 1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["full", "spark", "snapkv+spark"])
def test_gpu_real_head_dim_and_memory(spec):
    """D = 128 on the GPU, left-padded batch: Triton == torch (teacher forced), bytes honest, peak reported."""
    import sparkv

    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16, hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, intermediate_size=1024, max_position_embeddings=4096).to("cuda")
    contexts = [(CONTEXT + " ") * 8, (CONTEXT + " ") * 5]
    ids, mask = encode(tok, contexts, "cuda")
    forced = torch.randint(3, 250, (2, 6), device="cuda")
    ref, _ = run(model, ids, mask, spec, "torch", forced)
    got, got_cache = run(model, ids, mask, spec, "triton", forced)
    for r, g in zip(ref[1:], got[1:]):  # bf16: ~2% of the logit scale separates any two attention orders here
        assert (g.float() - r.float()).abs().max().item() <= 5e-2 * max(r.float().abs().max().item(), 1.0)
    r = sparkv.generate(model, tok, contexts, "Q?", Press(spec, key_ratio=0.5, budget=300), max_new_tokens=8)
    m = r.memory
    pressed = [layer for layer in got_cache.layers if isinstance(layer, PressedLayer)]
    if spec != "full":  # D = 128, 2 query heads per KV head: the CUDA kernel decodes, so the layers hold pages
        assert all(isinstance(layer.prefix, SparKPages) for layer in pressed)
    assert m.compressed_kv_bytes == m.allocated_kv_bytes
    assert m.peak_gpu_bytes is not None and m.peak_gpu_bytes > m.allocated_kv_bytes
    if spec != "full":  # D = 128, λ = 0.5: keys take 162 B instead of 256 B per (token, head)
        assert m.compressed_kv_bytes < m.dense_kv_bytes


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_gpu_num_return_sequences_equals_the_copied_batch(spec):
    """``num_return_sequences`` inside a press on CUDA, where the CUDA kernel decodes the pages: the same tokens as
    the batch of copied prompts with the same seed."""
    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16, hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, intermediate_size=1024, max_position_embeddings=4096).to("cuda")
    ids, mask = encode(tok, [(CONTEXT + " ") * 8, (CONTEXT + " ") * 5], "cuda")
    press = Press(spec, key_ratio=0.5, budget=300)
    kwargs = dict(max_new_tokens=8, do_sample=True, top_k=0, pad_token_id=PAD)
    with press(model):
        torch.manual_seed(0)
        several = model.generate(ids, attention_mask=mask, num_return_sequences=3, **kwargs)
        assert all(isinstance(layer.prefix, SparKPages) for layer in press.last_cache.layers)
        torch.manual_seed(0)
        copied = model.generate(ids.repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0), **kwargs)
    assert several.shape == (6, ids.shape[1] + 8)
    assert torch.equal(several, copied)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_gpu_reordered_pages_decode_as_the_reordered_batch(spec):
    """Beam search's reorder on CUDA, where the layers hold pages the CUDA kernel decodes: a cache filled with a
    left-padded batch and reordered decodes forced tokens to the same logits, bit for bit, as a cache filled with
    the rows in that order; then beam search runs end to end."""
    from sparkv.integration.transformers import cache_kwarg

    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16, hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, intermediate_size=1024, max_position_embeddings=4096).to("cuda")
    contexts, order = [(CONTEXT + " ") * 8, (CONTEXT + " ") * 5], [1, 0, 0]
    forced = torch.randint(3, 250, (3, 4), device="cuda")
    name = cache_kwarg(model)

    def decode(texts, reorder=None):
        ids, mask = encode(tok, texts, "cuda")
        cache = Press(spec, key_ratio=0.5, budget=300).make_cache(model)
        with use_sparkv_attention(model), torch.no_grad():
            model(ids, attention_mask=mask, use_cache=True, **{name: cache})
            assert all(isinstance(layer.prefix, SparKPages) for layer in cache.layers)
            if reorder is not None:
                cache.reorder_cache(torch.tensor(reorder, device="cuda"))
                mask = mask[reorder]
            logits = []
            for i in range(forced.shape[1]):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                out = model(forced[:, i:i + 1], attention_mask=mask, use_cache=True, **{name: cache},
                            position_ids=mask.sum(-1, keepdim=True) - 1)
                logits.append(out.logits[:, -1])
        return logits

    for got, want in zip(decode(contexts, order), decode([contexts[i] for i in order])):
        assert torch.equal(got, want)
    ids, mask = encode(tok, contexts, "cuda")
    with Press(spec, key_ratio=0.5, budget=300)(model):
        beams = model.generate(ids, attention_mask=mask, num_beams=3, max_new_tokens=6, do_sample=False,
                               pad_token_id=PAD)
    assert beams.shape == (2, ids.shape[1] + 6)


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_gpu_chunked_prefill_compresses_as_one_prefill(spec):
    """prefill_chunk_size on CUDA (bf16, pages for the CUDA kernel): the layers hold a prompt of the same shape and
    lengths as one prefill's, the prefill's logits agree up to bf16 rounding of the chunked attention, and decoding
    runs (exactness is the fp32 CPU tests')."""
    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16, hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, intermediate_size=1024, max_position_embeddings=4096).to("cuda")
    ids, mask = encode(tok, [(CONTEXT + " ") * 8, (CONTEXT + " ") * 5], "cuda")
    press = Press(spec, key_ratio=0.5, budget=300)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, output_logits=True, return_dict_in_generate=True)
    runs = []
    for chunk in (None, 512):
        with press(model):
            out = model.generate(ids, attention_mask=mask, prefill_chunk_size=chunk, **kwargs)
        assert out.sequences.shape == (2, ids.shape[1] + 6)
        runs.append((out.logits[0].float(), [layer.prefix for layer in press.last_cache.layers]))
    (want, one), (got, chunked) = runs
    assert (got - want).abs().max().item() <= 5e-2 * max(want.abs().max().item(), 1.0)
    for a, b in zip(one, chunked):
        assert isinstance(b, SparKPages) and torch.equal(a.lengths, b.lengths) and a.num_tokens == b.num_tokens


@pytest.mark.gpu
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_chunk_then_decode_after_compression_on_gpu(spec):
    """A second chat turn on CUDA: a multi-token chunk (PyTorch path) then one-token decode (Triton kernel) over the
    compressed cache, with the automatic backend, against the PyTorch backend throughout."""
    from sparkv.integration.transformers import cache_kwarg
    from sparkv.kernels.decode_attn import fused

    device = device_or_skip()
    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16).to(device)
    ids, mask = encode(tok, [CONTEXT], device)
    s = ids.shape[1]
    chunk = torch.randint(5, 200, (1, 7), generator=torch.Generator().manual_seed(7)).to(device)
    step = torch.tensor([[42]], device=device)
    logits = {}
    for backend in ("torch", "auto"):
        press = Press(spec, key_ratio=0.5, budget=100, backend=backend)
        kw = {cache_kwarg(model): press.make_cache(model)}
        with use_sparkv_attention(model), torch.no_grad():
            model(ids, attention_mask=mask, use_cache=True, **kw)
            a = model(chunk, use_cache=True, position_ids=torch.arange(s, s + 7, device=device)[None], **kw).logits
            fused.LAST_LAUNCH.clear()
            b = model(step, use_cache=True, position_ids=torch.tensor([[s + 7]], device=device), **kw).logits
        assert bool(fused.LAST_LAUNCH) == (backend == "auto")  # the step ran the Triton kernel only under auto
        logits[backend] = (a, b)
    for r, g in zip(logits["torch"], logits["auto"]):
        assert torch.isfinite(g).all()
        assert (g.float() - r.float()).abs().max().item() <= 2e-2 * max(r.float().abs().max().item(), 1.0)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("spec", ["spark", "snapkv+spark"])
def test_model_split_over_two_gpus(spec):
    """Layers split over two GPUs (accelerate's ``dispatch_model``, what ``device_map=`` does): every layer's cache
    stays on its layer's GPU, the kernels run there, and the logits and the cache's bytes equal the one-GPU model's."""
    from accelerate import dispatch_model

    import sparkv

    tok = tiny_tokenizer()
    shape = dict(hidden_size=512, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
                 intermediate_size=1024, max_position_embeddings=4096)
    one = tiny_model("llama", dtype=torch.bfloat16, **shape).to("cuda:0")
    split = dispatch_model(tiny_model("llama", dtype=torch.bfloat16, **shape), device_map={
        "model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": 0,
        "model.layers.2": 1, "model.layers.3": 1, "model.norm": 1, "lm_head": 1})
    assert split.model.layers[0].self_attn.k_proj.weight.device == torch.device("cuda", 0)
    assert split.lm_head.weight.device == torch.device("cuda", 1)
    contexts = [(CONTEXT + " ") * 8, (CONTEXT + " ") * 5]
    ids, mask = encode(tok, contexts, "cuda:0")
    forced = torch.randint(3, 250, (2, 6), generator=torch.Generator().manual_seed(3)).to("cuda:0")
    ref, _ = run(one, ids, mask, spec, "triton", forced)
    got, cache = run(split, ids, mask, spec, "triton", forced)
    pressed = [(i, layer) for i, layer in enumerate(cache.layers) if isinstance(layer, PressedLayer)]
    assert len(pressed) == 4
    for i, layer in pressed:
        assert isinstance(layer.prefix.keys, SparKKeys)
        assert layer.prefix.values.device == torch.device("cuda", i // 2)
        assert layer.prefix.keys.kept_values.device == torch.device("cuda", i // 2)
    for r, g in zip(ref, got):  # the model's output comes back to its input's GPU (accelerate's top-level hook)
        g = g.to(r.device)
        assert torch.isfinite(g).all()
        assert (g.float() - r.float()).abs().max().item() <= 2e-2 * max(r.float().abs().max().item(), 1.0)
    results = [sparkv.generate(m, tok, contexts, "Q?", Press(spec, key_ratio=0.5, budget=300), max_new_tokens=8)
               for m in (one, split)]
    assert results[1].memory.compressed_kv_bytes == results[0].memory.compressed_kv_bytes
    assert results[1].memory.compressed_kv_bytes == results[1].memory.allocated_kv_bytes
    assert len(results[1].token_ids) == 2


@pytest.mark.gpu
def test_gpu_candidates_in_the_prompts_forward_attend_as_decode_steps():
    """Assisted decoding on CUDA (bf16, pages, the CUDA kernel): a forward of the announced prompt plus five
    candidates gives the candidates the logits of five decode steps over the compressed prompt (up to bf16 rounding:
    the steps run the one-token kernel, the candidates the same kernel once each), and leaves the same cache; prompt
    lookup and a separate assistant model then run end to end."""
    from sparkv.integration.transformers import cache_kwarg

    tok = tiny_tokenizer()
    model = tiny_model("llama", dtype=torch.bfloat16, hidden_size=512, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, intermediate_size=1024, max_position_embeddings=4096).to("cuda")
    ids, _ = encode(tok, [(CONTEXT + " ") * 8], "cuda")
    forced = torch.randint(5, 200, (1, 5), generator=torch.Generator().manual_seed(3)).to("cuda")
    press, name, s = Press("snapkv+spark", key_ratio=0.5, budget=300), cache_kwarg(model), ids.shape[1]
    with use_sparkv_attention(model), torch.no_grad():
        steps = press.make_cache(model)
        want = [model(ids, use_cache=True, **{name: steps}).logits[:, -1]]
        for i in range(5):
            want.append(model(forced[:, i:i + 1], use_cache=True, **{name: steps}).logits[:, -1])
        once = press.make_cache(model)
        once.expect_prefill(s)
        got = model(torch.cat([ids, forced], 1), use_cache=True, **{name: once}).logits[:, s - 1:]
    want = torch.stack(want, 1).float()
    assert (got.float() - want).abs().max().item() <= 5e-2 * max(want.abs().max().item(), 1.0)
    for a, b in zip(steps.layers, once.layers):
        assert isinstance(b.prefix, SparKPages) and b.tail_len == a.tail_len == 5
        assert torch.equal(a.prefix.lengths, b.prefix.lengths)
    helper = tiny_model("llama", dtype=torch.bfloat16, seed=1, hidden_size=512, num_attention_heads=4,
                        num_key_value_heads=2, num_hidden_layers=1, intermediate_size=1024,
                        max_position_embeddings=4096).to("cuda")
    for extra in (dict(prompt_lookup_num_tokens=4), dict(assistant_model=helper)):
        with press(model):
            out = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=PAD,
                                 **extra)
        assert out.shape == (1, s + 12)
        assert press.last_cache.get_seq_length() == s + 11
