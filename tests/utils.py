"""Tiny random models and a byte-level tokenizer for fast CPU tests (no hub access needed).

Real sizes, for comparison: Llama-3.1-8B hidden 4096, 32 layers, 32 heads / 8 KV heads, head_dim 128;
Qwen3-8B head_dim 128 with q_norm/k_norm; Gemma-3-270m 4 heads / 1 KV head, head_dim 256, 5 of 6 layers sliding.
"""

from __future__ import annotations

import functools

import torch

VOCAB_SPECIALS = ("<pad>", "<s>", "</s>")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@functools.lru_cache(maxsize=None)
def tiny_tokenizer(chat_template: bool = True):
    """A byte-level BPE tokenizer without merges: 256 byte tokens + <pad> <s> </s> (vocab 259), reversible."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(VOCAB_SPECIALS)}
    for ch in sorted(byte_chars):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


VOCAB = 259
BOS, EOS, PAD = 1, 2, 0


def _common(**overrides) -> dict:
    base = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False,
                # Larger than the 0.02 default so attention is peaked and pruning visibly changes outputs.
                initializer_range=0.15)
    base.update(overrides)
    return base


def llama_config(**kw):
    """Llama with GQA (4 query heads, 2 KV heads, head_dim 16)."""
    from transformers import LlamaConfig

    return LlamaConfig(**_common(**kw))


def qwen2_config(**kw):
    """Qwen2 (q/k/v biases), 4 heads / 2 KV heads, head_dim 16."""
    from transformers import Qwen2Config

    return Qwen2Config(**_common(**kw))


def qwen3_config(**kw):
    """Qwen3: q_norm/k_norm, head_dim 32 (decoupled from hidden/heads), 4 heads / 1 KV head, 3 layers."""
    from transformers import Qwen3Config

    return Qwen3Config(**_common(**{"head_dim": 32, "num_key_value_heads": 1, "num_hidden_layers": 3, **kw}))


def mistral_config(**kw):
    """Mistral without a sliding window (as Mistral-7B v0.2+), 4 heads / 2 KV heads, head_dim 16."""
    from transformers import MistralConfig

    return MistralConfig(**_common(**{"sliding_window": None, **kw}))


def gemma3_config(**kw):
    """Gemma3 text: 4 layers, sliding (window 8) / full alternating, 2 heads / 1 KV head, head_dim 64."""
    from transformers import Gemma3TextConfig

    args = _common(num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, head_dim=64,
                   query_pre_attn_scalar=64, sliding_window=8,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
    args.update(kw)
    return Gemma3TextConfig(**args)


CONFIGS = {
    "llama": llama_config,
    "qwen2": qwen2_config,
    "qwen3": qwen3_config,
    "mistral": mistral_config,
    "gemma3_text": gemma3_config,
}


def tiny_model(arch: str = "llama", dtype: torch.dtype = torch.float32, seed: int = 0, attn: str = "sdpa", **kw):
    """A random tiny causal LM of ``arch`` (see ``CONFIGS``), eval mode, on CPU."""
    from transformers import AutoModelForCausalLM

    config = CONFIGS[arch](**kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn, dtype=dtype)
    return model.eval()


def tiny_gemma3_multimodal(seed: int = 0):
    """Gemma3ForConditionalGeneration (model_type "gemma3") with a 1-layer SigLIP tower; used text-only."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8)
    config = Gemma3Config(text_config=gemma3_config().to_dict(), vision_config=vision.to_dict(),
                          mm_tokens_per_image=4, image_token_index=258, boi_token_index=257, eoi_token_index=256)
    torch.manual_seed(seed)
    return Gemma3ForConditionalGeneration(config).eval()


# Text long enough for every press window (SnapKV's 64) after byte-level tokenisation.
CONTEXT = (
    "The lighthouse keeper wrote down the weather every morning. On the third day of March the wind turned "
    "north and the sea went grey. The secret number for the vault is 4721, kept in the blue notebook. "
    "Ships passed at noon and again at dusk, and the keeper counted them all."
)
QUESTION = "What is the secret number?"


def cache_kwarg(model) -> str:
    from sparkv.integration.transformers import cache_kwarg as _ck

    return _ck(model)


def encode(tokenizer, texts: list[str], device="cpu"):
    """Left-padded ids and mask for raw texts (no template)."""
    rows = [tokenizer(t)["input_ids"] for t in texts]
    s = max(len(r) for r in rows)
    ids = torch.full((len(rows), s), PAD, dtype=torch.long)
    mask = torch.zeros((len(rows), s), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, s - len(r):] = torch.tensor(r)
        mask[i, s - len(r):] = 1
    return ids.to(device), mask.to(device)


def teacher_forced_logits(model, ids, mask, cache, tokens):
    """Prefill logits ``[B, S, V]``, then one ``[B, V]`` per forced decode token (``tokens [B, T]``)."""
    kw = cache_kwarg(model)
    out = model(ids, attention_mask=mask, use_cache=True, **{kw: cache})
    logits = [out.logits]
    for i in range(tokens.shape[1]):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        out = model(tokens[:, i:i + 1], attention_mask=mask, use_cache=True, **{kw: cache},
                    position_ids=(mask.sum(-1, keepdim=True) - 1))
        logits.append(out.logits[:, -1])
    return logits
