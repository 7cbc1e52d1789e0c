"""sparkv inside transformers: attention + mask registered under ``"sparkv"``, a kvpress-like ``Press``, ``generate``.

Nothing here runs at import: :func:`register` adds the attention and mask functions to transformers'
``AttentionInterface`` / ``AttentionMaskInterface`` (the documented extension points; no transformers function is
patched), and is called by :class:`Press`, :func:`use_sparkv_attention`, :func:`generate`, :func:`generate_many`.

The cache/attention handshake
-----------------------------
transformers calls ``cache.update(k, v, layer_idx)`` and then ``attention_fn(module, query, keys, values, mask,
scaling=...)``; the attention function never sees the cache. A sparkv cache layer
(:class:`sparkv.cache.layer.PressedLayer`) therefore returns an :class:`~sparkv.cache.layer.AttentionHandle` in place
of both tensors. :func:`sparkv_attention_forward` recognises it:

- prefill (the layer holds a dense prompt waiting for compression): dense attention with transformers' own sdpa
  function and the model's causal/padding mask, exactly as ``attn_implementation="sdpa"`` would compute it; then the
  layer compresses itself from these very queries (the last ``W`` of them) and the padding mask — the same result as
  compressing every layer at the end of prefill, since a layer's keys, values and queries do not depend on later
  layers' caches;
- decode: ``sparkv.kernels.decode_attn.decode_attn`` over the compressed prefix and the dense tail, backend from the
  press (``auto``: Triton on CUDA for fp16/bf16 one-token steps, PyTorch otherwise; ``torch``/``triton`` force one);
- anything else (plain tensors: a sliding layer, a ``DynamicCache``, no cache): transformers' sdpa function.

The mask function is transformers' sdpa mask (the 4D boolean mask, or None where sdpa's ``is_causal`` suffices).

transformers versions (5.17 and 5.24 are tested)
-----------------------------------------------
- 5.24 names the cache argument ``cache`` (``past_key_values`` is deprecated), 5.17 only knows
  ``past_key_values``: :func:`cache_kwarg` reads the model's ``forward`` signature.
- 5.24 calls ``cache.update(k, v, idx, kwargs=...)``, 5.17 ``cache.update(k, v, idx)``: the layer accepts both.
- Both look attention and mask functions up by ``config._attn_implementation`` at call time, and both accept a
  registered name in ``set_attn_implementation``; the sdpa functions are fetched from the interfaces' global
  mappings at call time, so whatever transformers registered as ``"sdpa"`` is what the dense paths use.

Limits: prefill runs once per cache, in one forward or in announced chunks (``prefill_chunk_size``); a later
multi-token forward is appended to the tail, attended causally. Under assisted decoding and prompt lookup the prompt
is announced too, and the candidates verified in its forward join the tail (``PressedLayer.early_tail``).
``output_attentions`` and offloading are not supported.
"""

from __future__ import annotations

import inspect
import numbers
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from sparkv.cache.build import build_cache, fork_cache, layer_types, text_config
from sparkv.cache.layer import ATTN_IMPLEMENTATION, DEFAULT_TAIL_CHUNK, AttentionHandle
from sparkv.cache.layout import DenseKeys
from sparkv.config import PressConfig, parse_press
from sparkv.kernels.dispatch import resolve_backend
from sparkv.memory import MemoryReport, memory_report
from sparkv.methods.compose import required_prompt_tokens, window_size

__all__ = [
    "ATTN_IMPLEMENTATION",
    "SUPPORTED_MODEL_TYPES",
    "GenerationResult",
    "Press",
    "cache_kwarg",
    "check_model_supported",
    "generate",
    "generate_many",
    "register",
    "sparkv_attention_forward",
    "sparkv_mask",
    "use_sparkv_attention",
]

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral", "gemma3_text", "gemma3")


# --------------------------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------------------------


def check_model_supported(model_or_config) -> None:
    """Raise ``ValueError`` unless sparkv supports this model (architecture and attention features)."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not supported by sparkv; supported model types: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)}")
    tc = text_config(config)
    if getattr(tc, "attn_logit_softcapping", None) is not None:
        raise ValueError(f"attn_logit_softcapping={tc.attn_logit_softcapping} (attention logit soft-capping) is not "
                         "supported by sparkv's attention")
    if getattr(tc, "use_bidirectional_attention", False) or getattr(tc, "is_causal", True) is False:
        raise ValueError("bidirectional attention (use_bidirectional_attention / is_causal=False) is not supported "
                         "by sparkv")
    if getattr(tc, "is_heterogeneous", False):
        raise ValueError("heterogeneous per-layer configs (per_layer_config) are not supported by sparkv")
    layer_types(tc)


# --------------------------------------------------------------------------------------------------------------
# Attention and mask functions
# --------------------------------------------------------------------------------------------------------------


def _sdpa_attention():
    from transformers.modeling_utils import AttentionInterface

    return AttentionInterface._global_mapping["sdpa"]


def sparkv_mask(*args, **kwargs):
    """The ``"sparkv"`` mask function: transformers' sdpa mask (boolean 4D, or None when causal suffices)."""
    from transformers.masking_utils import AttentionMaskInterface

    return AttentionMaskInterface._global_mapping["sdpa"](*args, **kwargs)


def sparkv_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, **kwargs):
    """The ``"sparkv"`` attention function (module docstring). Returns ``([B, Q, HQ, D], None)``."""
    if not isinstance(key, AttentionHandle):
        return _sdpa_attention()(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                 **kwargs)
    if kwargs.get("output_attentions"):
        raise ValueError("output_attentions is not supported with a sparkv cache")
    if getattr(module, "training", False) and dropout:
        raise ValueError("sparkv caches are for inference: put the model in eval mode")
    layer = key.layer
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if not layer.pending:
        return _decode_attention(module, layer, query, attention_mask, scaling, dropout, kwargs), None
    early = layer.early_tail_len
    if not early:
        out, _ = _sdpa_attention()(module, query, layer.keys, layer.values, attention_mask, dropout=dropout,
                                   scaling=scaling, **kwargs)
        layer.finish_prefill(query, attention_mask, scaling)
        return out, None
    # The forward that completes an announced prompt also carries the first tokens after it (assisted decoding's
    # candidates): the prompt's queries attend densely and the layer compresses, then the later queries attend over
    # the compressed prompt plus those tokens, as a decode step would.
    prompt_query = query[:, :, :-early]
    prompt_mask = attention_mask[:, :, :-early, :layer.prompt_len] if isinstance(attention_mask, torch.Tensor) \
        else attention_mask  # None: causal over the whole forward, so over its prompt part too
    out, _ = _sdpa_attention()(module, prompt_query, layer.keys, layer.values, prompt_mask, dropout=dropout,
                               scaling=scaling, **kwargs)
    layer.finish_prefill(prompt_query, prompt_mask, scaling)
    rest = _decode_attention(module, layer, query[:, :, -early:], attention_mask, scaling, dropout, kwargs)
    return torch.cat([out, rest], 1), None


def _decode_attention(module, layer, query, attention_mask, scaling: float, dropout: float, kwargs: dict):
    """Attention of ``query`` (the newest tokens, already in the layer's tail) over the compressed prompt plus the
    tail: ``[B, Q, HQ, D]``."""
    if layer.prefix is None:
        raise RuntimeError(f"sparkv layer {layer.layer_idx} has no compressed prompt to attend to")
    from sparkv.kernels.decode_attn import decode_attn

    tail_keys, tail_values, tail_length = layer.attention_tail()
    if tail_length is not None:  # graph decoding: no padding after the prompt by construction, and no host syncs
        out = decode_attn(query, layer.prefix, tail_keys, tail_values, scaling, backend=layer.press.backend,
                          tail_length=tail_length)
        return out.transpose(1, 2).contiguous()
    _check_tail_mask(attention_mask, layer)
    if resolve_backend(layer.press.backend, query.device) == "torch" and _is_plain_dense(layer.prefix, query):
        # Nothing pruned, no padding, one new token: the very computation a plain DynamicCache does, so full and
        # λ = 0 presses reproduce the dense model bit for bit on the PyTorch path.
        keys = layer.prefix.keys.keys if tail_keys is None else torch.cat([layer.prefix.keys.keys, tail_keys], 2)
        values = layer.prefix.values if tail_values is None else torch.cat([layer.prefix.values, tail_values], 2)
        return _sdpa_attention()(module, query, keys, values, None, dropout=dropout, scaling=scaling, **kwargs)[0]
    out = decode_attn(query, layer.prefix, tail_keys, tail_values, scaling, backend=layer.press.backend)
    return out.transpose(1, 2).contiguous()


_CHECKED_MASK: list = [None]  # the last mask found free of padding after the prompt (one check per forward)


def _check_tail_mask(attention_mask, layer) -> None:
    """Refuse padding among the tokens after the prompt: decode attends to every tail token (the prompt's own
    padding is handled by the compressed rows' lengths). The same mask tensor reaches every layer of a forward, so
    it is read once (on CUDA this is one host sync per forward, only when transformers passes a mask at all)."""
    if attention_mask is None or not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 4:
        return
    key = (attention_mask.data_ptr(), tuple(attention_mask.shape), attention_mask._version, layer.prompt_len,
           layer.tail_len)
    if _CHECKED_MASK[0] == key:
        return
    # The last query sees every tail token (the causal part of the mask hides nothing from it).
    seen = attention_mask[:, :, -1, layer.prompt_len:layer.prompt_len + layer.tail_len]
    allowed = seen if seen.dtype == torch.bool else seen == 0
    if seen.numel() and not bool(allowed.all()):
        raise ValueError("the attention mask has zeros after the prompt (padding among the new tokens of a batch): a "
                         "sparkv cache attends to every token after the prompt; give each row's new tokens without "
                         "padding (e.g. one row at a time for turns of different lengths)")
    _CHECKED_MASK[0] = key


def _is_plain_dense(prefix, query) -> bool:
    return isinstance(getattr(prefix, "keys", None), DenseKeys) and query.shape[2] == 1 \
        and prefix.min_length == prefix.num_tokens


def register() -> None:
    """Register :func:`sparkv_attention_forward` and :func:`sparkv_mask` under ``"sparkv"`` (idempotent)."""
    from transformers.masking_utils import AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, sparkv_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sparkv_mask)


def _all_configs(model) -> list:
    """The model's config, its sub-configs and its sub-models' configs, parents before children, each once."""
    seen, out = set(), []
    queue = deque([model.config])
    for module in model.modules():
        if getattr(module, "config", None) is not None and hasattr(module.config, "_attn_implementation"):
            queue.append(module.config)
    while queue:
        cfg = queue.popleft()
        if id(cfg) in seen:
            continue
        seen.add(id(cfg))
        out.append(cfg)
        for key in getattr(cfg, "sub_configs", {}) or {}:
            sub = getattr(cfg, key, None)
            if sub is not None and hasattr(sub, "_attn_implementation"):
                queue.append(sub)
    return out


@contextmanager
def use_sparkv_attention(model):
    """Within the block, ``model`` runs with ``attn_implementation="sparkv"``; the previous ones are restored after."""
    check_model_supported(model)
    register()
    saved = [(cfg, cfg._attn_implementation) for cfg in _all_configs(model)]
    model.set_attn_implementation(ATTN_IMPLEMENTATION)
    try:
        yield model
    finally:
        for cfg, impl in saved:
            cfg._attn_implementation = impl


def cache_kwarg(model) -> str:
    """Name of the cache argument of ``model.forward`` / ``generate``: ``cache`` (5.24) or ``past_key_values``."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


# --------------------------------------------------------------------------------------------------------------
# Press
# --------------------------------------------------------------------------------------------------------------

_MISSING = object()


class Press:
    """A press to apply to a model, kvpress style.

    Example::

        press = Press("snapkv+spark", key_ratio=0.5, budget=512)
        with press(model):
            out = model.generate(**inputs, max_new_tokens=32)   # a sparkv cache is passed for you
        print(press.memory().summary())

    Inside ``with press(model):`` the model's attention implementation is ``"sparkv"`` (restored on exit) and
    ``model.generate`` gets a fresh cache from :meth:`make_cache` unless the call passes one (``cache`` /
    ``past_key_values``); this is an instance attribute set for the block only, removed on exit. Outside ``generate``
    pass ``press.make_cache(model)`` yourself, e.g. ``model(input_ids, past_key_values=cache)`` (``cache=`` on
    transformers >= 5.24). A plain forward without a cache runs dense. ``num_return_sequences=n`` and beam search
    work as in transformers: each prompt is copied n (or ``num_beams``) times before the prefill, so the cache holds
    that many compressed copies, and beam search reorders them every step. Assisted decoding (``assistant_model``, a
    separate model) and prompt lookup (``prompt_lookup_num_tokens``) give greedy decoding's tokens over the
    compressed cache: the prompt's forward also verifies the first candidates, which are attended and cached as
    decode tokens, and rejected candidates are cropped from the decode tail.

    Args:
        config: a ``PressConfig`` or a press spec (``"spark"``, ``"snapkv+spark"``, ...; see ``parse_press``).
        tail_chunk: decode tail growth, in tokens.
        **parse_kwargs: ``parse_press`` options when ``config`` is a string (``key_ratio``, ``budget``, ...).
    """

    def __init__(self, config: PressConfig | str | None = None, *, tail_chunk: int = DEFAULT_TAIL_CHUNK,
                 **parse_kwargs) -> None:
        if config is None:
            if parse_kwargs:
                raise TypeError(f"options {sorted(parse_kwargs)} need a press spec, e.g. Press('spark', ...); "
                                "Press() alone is the full (uncompressed) cache")
            config = "full"
        if isinstance(config, str):
            config = parse_press(config, **parse_kwargs)
        elif parse_kwargs:
            raise TypeError(f"options {sorted(parse_kwargs)} only apply to a press spec string")
        if not isinstance(config, PressConfig):
            raise TypeError(f"config must be a PressConfig or a press spec string, got {type(config).__name__}")
        if not isinstance(tail_chunk, int) or isinstance(tail_chunk, bool) or tail_chunk < 1:
            raise ValueError(f"tail_chunk must be an integer >= 1, got {tail_chunk!r}")
        self.config = config
        self.tail_chunk = tail_chunk
        self.last_cache = None

    @property
    def name(self) -> str:
        return self.config.name

    def __repr__(self) -> str:
        return f"Press({self.config!r})"

    def make_cache(self, model):
        """A fresh sparkv cache for ``model`` (checks the architecture); also kept as ``last_cache``."""
        check_model_supported(model)
        register()
        self.last_cache = build_cache(model, self.config, tail_chunk=self.tail_chunk, check=False)
        return self.last_cache

    def memory(self, cache=None) -> MemoryReport:
        """Memory report of ``cache`` (default: the last cache made)."""
        cache = cache if cache is not None else self.last_cache
        if cache is None:
            raise RuntimeError("no cache yet: run the model inside `with press(model):` first")
        return memory_report(cache)

    @contextmanager
    def __call__(self, model):
        with use_sparkv_attention(model):
            previous = model.__dict__.get("generate", _MISSING)
            bound = model.generate
            name = cache_kwarg(model)

            def generate(*args, **kwargs):
                check_generation_options(model, kwargs, several_sequences=True)  # beams, assisted decoding too
                use_cache_default_on(kwargs)
                if "cache" in kwargs and kwargs["cache"] is None:
                    del kwargs["cache"]  # an explicit None would make transformers ignore past_key_values
                if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
                    kwargs.pop("cache", None)
                    kwargs.pop("past_key_values", None)
                    kwargs[name] = self.make_cache(model)
                cache = kwargs.get("cache", kwargs.get("past_key_values"))
                if not hasattr(cache, "expect_prefill"):  # not a sparkv cache: transformers' own handling
                    return bound(*args, **kwargs)
                ids = kwargs.get("input_ids", kwargs.get("inputs", args[0] if args else None))
                empty = cache.get_seq_length() == 0
                announce_prompt(model, cache, kwargs, ids.shape[-1] if isinstance(ids, torch.Tensor) else None)
                try:
                    return bound(*args, **kwargs)
                except BaseException:
                    if empty and not cache.prefilled():  # a failed or refused prefill leaves the cache empty and
                        cache.reset()                    # reusable, not half-filled (a decode error keeps it)
                    raise
                finally:
                    cache.end_past_recording()  # assisted decoding turned it on: the next turn holds windows again

            generate._sparkv_press = True  # an assistant_model inside a press is refused (check_generation_options)
            generate.__doc__ = bound.__doc__
            object.__setattr__(model, "generate", generate)
            try:
                yield self
            finally:
                if previous is _MISSING:
                    model.__dict__.pop("generate", None)
                else:
                    object.__setattr__(model, "generate", previous)


def _as_press(press) -> Press:
    if isinstance(press, Press):
        return press
    return Press(press)


# --------------------------------------------------------------------------------------------------------------
# generate
# --------------------------------------------------------------------------------------------------------------


@dataclass
class GenerationResult:
    """What :func:`generate` returns.

    Attributes:
        answer: the decoded answer (a list for a batch), cut at the first end-of-sequence token.
        context_tokens: prompt tokens (context + question + template), per row for a batch.
        memory: the KV cache accounting after generation (``sparkv.memory.MemoryReport``).
        press: the press name.
        token_ids: generated token ids per row (end-of-sequence and what follows removed).
    """

    answer: str | list[str]
    context_tokens: int | list[int]
    memory: MemoryReport
    press: str = ""
    token_ids: list[list[int]] = field(default_factory=list, repr=False)


@dataclass
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]
    single: bool
    pad_token_id: int


def _as_list(name: str, value, n: int | None = None) -> list[str]:
    if value is not None and not isinstance(value, (str, list, tuple)):
        raise TypeError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
    items = [value] if isinstance(value, str) else list(value) if value is not None else []
    if n is not None and len(items) == 1 and n > 1:
        items = items * n
    if any(not isinstance(v, str) for v in items):
        raise TypeError(f"{name} must be a string or a list of strings")
    return items


def build_prompts(tokenizer, context, question, chat_template: bool = True, answer_prefix: str = "") -> list[str]:
    """Prompt texts: context then question, in the tokenizer's chat template when it has one and asked to;
    ``answer_prefix`` is appended after the template's generation prompt (the start of the reply)."""
    if not isinstance(chat_template, bool):
        raise TypeError(f"chat_template must be True or False, got {chat_template!r}")
    if not isinstance(answer_prefix, str):
        raise TypeError(f"answer_prefix must be a string ('' for none), got {type(answer_prefix).__name__}")
    contexts = _as_list("context", context)
    if not contexts or any(not c.strip() for c in contexts):
        raise ValueError("context must be a non-empty string (or a non-empty list of non-empty strings)")
    questions = _as_list("question", question if question is not None else "", len(contexts))
    if len(questions) != len(contexts):
        raise ValueError(f"question must be one string or one per context ({len(contexts)}), got {len(questions)}")
    texts = [f"{c}\n\n{q}" if q.strip() else c for c, q in zip(contexts, questions)]
    if chat_template and getattr(tokenizer, "chat_template", None):
        return [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                              tokenize=False) + answer_prefix for t in texts]
    return [t + answer_prefix for t in texts]


def _encode(model, tokenizer, context, question, chat_template: bool, answer_prefix: str = "") -> _Batch:
    texts = build_prompts(tokenizer, context, question, chat_template, answer_prefix)
    templated = chat_template and bool(getattr(tokenizer, "chat_template", None))
    rows = [tokenizer(t, add_special_tokens=not templated)["input_ids"] for t in texts]
    lengths = [len(r) for r in rows]
    if min(lengths) == 0:
        raise ValueError("context encodes to no tokens")
    pad = tokenizer.pad_token_id
    if pad is None:
        eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else model.generation_config.eos_token_id
        pad = eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 0)
    s = max(lengths)
    ids = torch.full((len(rows), s), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), s), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding
        ids[i, s - len(r):] = torch.tensor(r, dtype=torch.long)
        mask[i, s - len(r):] = 1
    device = model.device
    return _Batch(ids.to(device), mask.to(device), lengths, isinstance(context, str), int(pad))


def _check_context_length(batch: _Batch, presses: list[Press], model=None, max_new_tokens: int = 0,
                          max_context: int | None = None) -> None:
    if max_context is not None and (not isinstance(max_context, int) or isinstance(max_context, bool)
                                    or max_context < 1):
        raise ValueError(f"max_context must be a positive integer, got {max_context!r}")
    config = model.config.get_text_config() if model is not None else None
    limit = max_context or getattr(config, "max_position_embeddings", None)
    longest = batch.input_ids.shape[1]
    if limit is not None and longest + max_new_tokens > limit:
        if max_context:
            raise ValueError(f"the prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceed max_context "
                             f"(CLI: --max-context) = {limit} tokens: shorten the context or raise max_context")
        raise ValueError(
            f"the prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceed the model's context of {limit} "
            "tokens (max_position_embeddings): shorten the context, or pass max_context (CLI: --max-context) for a "
            "model known to work beyond it")
    shortest = min(batch.lengths)
    for p in presses:
        need = required_prompt_tokens(p.config)
        if shortest < need:
            raise ValueError(
                f"context too short for press {p.name!r}: the prompt has {shortest} tokens but the press's observation "
                f"window needs at least {need} (channels.window / eviction.window); use a longer context or a "
                "smaller window")


def _eos_ids(model, gen_kwargs) -> set[int]:
    """The end-of-sequence ids ``model.generate`` stops at: ``eos_token_id``, else a passed ``generation_config``'s,
    else the model's."""
    eos = gen_kwargs.get("eos_token_id")
    if eos is None and gen_kwargs.get("generation_config") is not None:
        eos = gen_kwargs["generation_config"].eos_token_id
    if eos is None:
        eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    if isinstance(eos, torch.Tensor):
        eos = eos.tolist()
    return set(eos) if isinstance(eos, (list, tuple, set)) else {int(eos)}


def _reset_peak(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(model.device)


def _result(tokenizer, new_tokens: torch.Tensor, eos: set[int], batch: _Batch, cache, press: Press):
    token_ids = []
    for row in new_tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in eos), len(row))
        token_ids.append(row[:cut])
    answers = [tokenizer.decode(r, skip_special_tokens=True) for r in token_ids]
    return GenerationResult(
        answer=answers[0] if batch.single else answers,
        context_tokens=batch.lengths[0] if batch.single else list(batch.lengths),
        memory=memory_report(cache),
        press=press.name,
        token_ids=token_ids,
    )


def _generation_option(model, kwargs: dict, name: str, default=None):
    """What ``model.generate`` will use for ``name``: the keyword, else the passed ``generation_config``, else the
    model's own generation config."""
    if kwargs.get(name) is not None:
        return kwargs[name]
    for config in (kwargs.get("generation_config"), getattr(model, "generation_config", None)):
        value = getattr(config, name, None) if config is not None else None
        if value is not None:
            return value
    return default


ASSISTED_OPTIONS = ("assistant_model", "prompt_lookup_num_tokens")


def _assisted(model, kwargs: dict) -> str | None:
    """The option that makes ``model.generate`` verify candidates (assisted decoding, prompt lookup), if any."""
    return next((o for o in ASSISTED_OPTIONS if _generation_option(model, kwargs, o) is not None), None)


def check_generation_options(model, kwargs: dict, *, several_sequences: bool = False, beams: str | None = None,
                             chunked: str | None = None, assisted: str | None = None) -> None:
    """Refuse ``model.generate`` options a sparkv cache cannot serve, wherever they are set (keywords, the
    ``generation_config`` passed, the model's own generation config).

    ``several_sequences``: admit ``num_return_sequences`` > 1 (``model.generate`` inside a press: transformers
    copies each prompt that many times before the prefill, so every copy is compressed as a row of its own).
    ``sparkv.generate`` returns one answer per context and refuses it.
    ``beams``: None admits beam search (the cache reorders its rows: ``PressedLayer.select_rows``); else the reason
    the caller cannot run it. ``chunked``: likewise for ``prefill_chunk_size`` (the caller announces the prompt's
    length: :func:`announce_prompt`), and ``assisted`` for ``assistant_model`` / ``prompt_lookup_num_tokens``
    (likewise announced: the candidates verified in the prompt's forward join the decode tail).
    """
    num_beams = _generation_option(model, kwargs, "num_beams", 1)
    if isinstance(num_beams, bool) or not isinstance(num_beams, numbers.Integral) or num_beams < 1:
        raise ValueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
    if beams is not None and num_beams != 1:
        raise ValueError(f"beam search (num_beams > 1) is not supported {beams}")
    if num_beams != 1 and (option := _assisted(model, kwargs)) is not None:
        raise ValueError(f"{option} needs num_beams=1 (greedy search or sampling): under beam search transformers "
                         f"drops it with a warning, got num_beams={num_beams}")
    n = _generation_option(model, kwargs, "num_return_sequences", 1)
    if n != 1 and not several_sequences:
        raise ValueError(f"num_return_sequences must be 1 in sparkv.generate and generate_many (one answer per "
                         f"context); got {n!r}. For several samples of one prompt run model.generate(..., "
                         "num_return_sequences=n) inside `with sparkv.Press(...)(model):`, or call generate again")
    if _generation_option(model, kwargs, "assistant_early_exit") is not None:
        raise ValueError("assistant_early_exit is not supported with a sparkv press: its assistant is the model "
                         "itself, whose attention and generate the press has replaced; pass a separate assistant_model")
    if kwargs.get("assistant_model") is model:
        raise ValueError("assistant_model is the pressed model itself: pass a separate (smaller) model, or "
                         "prompt_lookup_num_tokens")
    if getattr(getattr(kwargs.get("assistant_model"), "generate", None), "_sparkv_press", False):
        raise ValueError("assistant_model runs inside a sparkv press: transformers rolls an assistant's cache back "
                         "into its prompt, which a compressed prompt cannot take; give the assistant its plain cache")
    if assisted is not None and (option := _assisted(model, kwargs)) is not None:
        raise ValueError(f"{option} (assisted decoding, prompt lookup) is not supported {assisted}")
    if chunked is not None and _generation_option(model, kwargs, "prefill_chunk_size") is not None:
        raise ValueError(f"prefill_chunk_size is not supported {chunked}")
    # use_cache: a model's own default (many checkpoints ship use_cache=False) is overridden by sparkv's calls
    # (use_cache_default_on); only an explicit False is refused.
    explicit = kwargs.get("use_cache")
    if explicit is None and kwargs.get("generation_config") is not None:
        explicit = getattr(kwargs["generation_config"], "use_cache", None)
    if explicit is False:
        raise ValueError("use_cache=False is not supported with a sparkv press: without a cache every step would "
                         "re-run the whole sequence densely (no compression); leave use_cache on")


# transformers 5.21 feeds a chunked prefill from the cache's length on; 5.17-5.20 restart at position 0.
CHUNKS_SKIP_THE_CACHE = "5.21"


def chunks_skip_the_cache() -> bool:
    """Whether the installed transformers starts a chunked prefill after what the cache holds (>= 5.21)."""
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(CHUNKS_SKIP_THE_CACHE)


def announce_prompt(model, cache, kwargs: dict, prompt_tokens: int | None) -> None:
    """Tell an empty sparkv cache how long the prompt is when a forward will not hold exactly the prompt
    (``PressedLayer.expect_prefill``): under ``prefill_chunk_size`` its layers compress after the chunk that completes
    it; under assisted decoding or prompt lookup the first forward also verifies the first candidates, which join
    the decode tail. A cache that already holds a prompt takes every new token of a chunked call into its decode
    tail, as any multi-token continuation (transformers >= 5.21; before, the chunks would start over from the first
    token, so that is refused); assisted decoding there is refused by the cache
    (``SparkvCache.activate_past_recording``: transformers re-feeds the whole input)."""
    chunk = _generation_option(model, kwargs, "prefill_chunk_size")
    assisted = _assisted(model, kwargs)
    if chunk is None and assisted is None:
        return
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 1):
        raise ValueError(f"prefill_chunk_size must be an integer >= 1, got {chunk!r}")
    if assisted is not None and kwargs.get("inputs_embeds") is not None:
        raise ValueError(f"{assisted} with inputs_embeds is not supported with a sparkv cache: the prompt's length "
                         "is announced from input_ids; pass input_ids only")
    if cache.get_seq_length() > 0:  # assisted decoding here is refused by the cache (activate_past_recording)
        if assisted is None and not chunks_skip_the_cache():
            raise ValueError(f"prefill_chunk_size on a cache that already holds a prompt needs transformers >= "
                             f"{CHUNKS_SKIP_THE_CACHE} (earlier versions start the chunks over from the first token)")
        return
    if prompt_tokens is None:
        raise ValueError(f"{'prefill_chunk_size' if chunk is not None else assisted} with a sparkv cache needs the "
                         "prompt as input_ids (its length is announced to the cache)")
    cache.expect_prefill(prompt_tokens)


def use_cache_default_on(kwargs: dict) -> dict:
    """``use_cache=True`` unless the caller set it (a sparkv cache is passed, so it must be used)."""
    config = kwargs.get("generation_config")
    if kwargs.get("use_cache") is None and (config is None or getattr(config, "use_cache", None) is None
                                            or config.use_cache is True):
        kwargs["use_cache"] = True
    return kwargs


def _resolve_length_and_sampling(gen_kwargs: dict, max_new_tokens: int | None, do_sample: bool | None
                                 ) -> tuple[int, bool]:
    """Explicit arguments first, then the ``generation_config`` passed, then sparkv's defaults (32 tokens, greedy:
    a model's own sampling defaults do not apply unless asked for)."""
    config = gen_kwargs.get("generation_config")
    if max_new_tokens is None:
        max_new_tokens = getattr(config, "max_new_tokens", None) or 32
    elif isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    else:
        max_new_tokens = int(max_new_tokens)
    if do_sample is None:
        do_sample = bool(getattr(config, "do_sample", False)) if config is not None else False
    elif not isinstance(do_sample, bool):
        raise TypeError(f"do_sample must be True, False or None, got {do_sample!r}")
    return max_new_tokens, do_sample


def _generate_kwargs(batch: _Batch, do_sample: bool, gen_kwargs: dict, tokenizer, model=None,
                     beams: str | None = None, chunked: str | None = None, assisted: str | None = None) -> dict:
    kwargs = dict(do_sample=do_sample, pad_token_id=batch.pad_token_id)
    kwargs.update(gen_kwargs)
    for bad in ("cache", "past_key_values"):
        if bad in kwargs:
            raise ValueError(f"sparkv.generate builds its own cache; do not pass {bad}")
    check_generation_options(model, kwargs, beams=beams, chunked=chunked, assisted=assisted)
    use_cache_default_on(kwargs)
    kwargs.setdefault("tokenizer", tokenizer)  # model.generate needs it for stop_strings
    return kwargs


# generate() options tied to the step count: generate_many generates the first token in a call of its own, so these
# would act one step late in the second call (a criterion meant for the first token, tokens suppressed at the start).
STEP_DEPENDENT_OPTIONS = ("stopping_criteria", "stop_strings", "begin_suppress_tokens", "logits_processor",
                          "prefix_allowed_tokens_fn", "forced_bos_token_id")


def _refuse_step_dependent(kwargs: dict) -> None:
    config = kwargs.get("generation_config")
    given = [k for k in STEP_DEPENDENT_OPTIONS
             if kwargs.get(k) is not None or (config is not None and getattr(config, k, None) is not None)]
    if given:
        raise ValueError(f"generate_many does not support {', '.join(given)}: its first token is generated in a call "
                         "of its own, so these would apply one step late; use sparkv.generate per press")


def _check_graph_options(model, cuda_graph) -> None:
    """``cuda_graph`` is a bool, and when True the model's decode step can be replayed from a graph."""
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be True or False, got {cuda_graph!r}")
    if cuda_graph:
        from sparkv.integration.graphs import check_graph_decodable

        check_graph_decodable(model)


@torch.no_grad()
def generate(model, tokenizer, context, question, press, max_new_tokens: int | None = None,
             chat_template: bool = True, do_sample: bool | None = None, answer_prefix: str = "",
             max_context: int | None = None, cuda_graph: bool = False, **gen_kwargs) -> GenerationResult:
    """Answer ``question`` about ``context`` with ``model`` under ``press``.

    The prompt is context then question (in the tokenizer's chat template when it has one and ``chat_template``);
    a list of contexts (and one question or one per context) runs as one left-padded batch. The whole prompt is
    prefilled densely, each layer is compressed right after its prefill attention, and the answer is decoded
    (``model.generate``) over the compressed prompt plus the dense tail of generated tokens.

    Args:
        model: a supported transformers causal LM (``SUPPORTED_MODEL_TYPES``).
        tokenizer: its tokenizer.
        context: a string or a list of strings (a batch).
        question: a string, or one per context.
        press: a :class:`Press`, a ``PressConfig`` or a press spec string (``"snapkv+spark"``).
        max_new_tokens, do_sample, **gen_kwargs: passed to ``model.generate``. Unset, ``max_new_tokens`` and
            ``do_sample`` come from a ``generation_config`` passed in ``gen_kwargs``, else 32 tokens, greedy.
            ``num_beams`` runs beam search (the answer is the best beam; not with ``cuda_graph``);
            ``prompt_lookup_num_tokens`` / ``assistant_model`` verify candidates, one context at a time (not with
            ``cuda_graph``).
        chat_template: use the tokenizer's chat template if it has one.
        answer_prefix: text that starts the reply (after the template's generation prompt); part of the prompt.
        max_context: refuse prompts whose tokens + ``max_new_tokens`` exceed this (default: the model's
            ``max_position_embeddings``).
        cuda_graph: ``model.generate`` as usual (sampling, processors and stopping criteria included), but each
            one-token step replays one CUDA graph captured at the first (``sparkv.integration.graphs``). The tokens
            are the eager run's up to bf16 rounding (captured steps merge the CUDA kernel's splits with the combine
            kernel, eager ones in the kernel), which can flip a near-tie; refused (``ValueError``) off CUDA, for a
            model spread over several devices and for models with sliding-window layers.

    Returns:
        :class:`GenerationResult` (answer, context_tokens, memory, ...).

    Raises:
        ValueError: empty context, context shorter than the press window or longer than the model's context,
            unsupported architecture or option.
    """
    press = _as_press(press)
    check_model_supported(model)
    max_new_tokens, do_sample = _resolve_length_and_sampling(gen_kwargs, max_new_tokens, do_sample)
    _check_graph_options(model, cuda_graph)
    batch = _encode(model, tokenizer, context, question, chat_template, answer_prefix)
    _check_context_length(batch, [press], model, max_new_tokens, max_context)
    kwargs = _generate_kwargs(batch, do_sample, gen_kwargs, tokenizer, model,
                              beams="with cuda_graph=True (graph steps keep the batch rows in place)" if cuda_graph
                              else None,
                              chunked="with cuda_graph=True (a one-token last chunk would look like a decode step)"
                              if cuda_graph else None,
                              assisted="with cuda_graph=True (graph steps take one token, candidates come several at "
                                       "a time)" if cuda_graph else None)
    _reset_peak(model)
    with press(model):
        cache = press.make_cache(model)  # press(model)'s generate announces the prompt to it
        with _decode_steps(model, cache, max_new_tokens - 1, cuda_graph):
            out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens,
                                 **{cache_kwarg(model): cache}, **kwargs)
    sequences = out.sequences if hasattr(out, "sequences") else out
    return _result(tokenizer, sequences[:, batch.input_ids.shape[1]:], _eos_ids(model, gen_kwargs), batch, cache,
                   press)


def _decode_steps(model, cache, steps: int, cuda_graph: bool):
    """:func:`sparkv.integration.graphs.replay_decode_steps` when ``cuda_graph`` and a step is left, else nothing."""
    if not cuda_graph or steps < 1:
        return nullcontext()
    from sparkv.integration.graphs import replay_decode_steps

    return replay_decode_steps(model, cache, steps)


@torch.no_grad()
def generate_many(model, tokenizer, context, question, presses, max_new_tokens: int | None = None,
                  chat_template: bool = True, do_sample: bool | None = None, answer_prefix: str = "",
                  max_context: int | None = None, cuda_graph: bool = False, **gen_kwargs) -> list[GenerationResult]:
    """:func:`generate` for several presses sharing one dense prefill.

    The prompt is prefilled once with a recording cache (dense keys/values plus the last ``W`` queries of every
    layer, ``W`` the largest window of the presses) and the first answer token is generated from that prefill (the
    prefill attention is dense whatever the press, so this token is the one every separate run would produce). Then
    for each press the recorded prompt is compressed into a fresh cache and decoding continues from the first token.
    With greedy decoding the answers equal separate :func:`generate` calls; with sampling the first token is drawn
    once and shared by all presses. The dense prompt stays alive until every press has run (peak memory).
    ``cuda_graph``: every press's one-token steps replay a CUDA graph, as in :func:`generate`.

    Returns:
        one :class:`GenerationResult` per press, in order.
    """
    if isinstance(presses, (str, Press, PressConfig)) or not hasattr(presses, "__iter__"):
        raise TypeError(f"presses must be a list of presses (specs, PressConfigs or Presses), got "
                        f"{type(presses).__name__}; for one press use sparkv.generate, or pass [press]")
    presses = [_as_press(p) for p in presses]
    if not presses:
        raise ValueError("presses must hold at least one press")
    check_model_supported(model)
    max_new_tokens, do_sample = _resolve_length_and_sampling(gen_kwargs, max_new_tokens, do_sample)
    _check_graph_options(model, cuda_graph)
    batch = _encode(model, tokenizer, context, question, chat_template, answer_prefix)
    _check_context_length(batch, presses, model, max_new_tokens, max_context)
    kwargs = _generate_kwargs(batch, do_sample, gen_kwargs, tokenizer, model,
                              beams="by generate_many (its first token is generated in a call of its own, which would "
                                    "end the beams there); use sparkv.generate per press",
                              chunked="by generate_many (its shared prefill records one dense prompt); use "
                                      "sparkv.generate per press",
                              assisted="by generate_many (its first token is generated in a call of its own); use "
                                       "sparkv.generate per press")
    _refuse_step_dependent(kwargs)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    min_new = kwargs.pop("min_new_tokens", None)
    eos = _eos_ids(model, gen_kwargs)
    name = cache_kwarg(model)
    s = batch.input_ids.shape[1]
    record_window = max(window_size(p.config) for p in presses)
    recorder = build_cache(model, None, record_window=record_window, check=False)
    results = []
    with use_sparkv_attention(model):
        first_kwargs = dict(kwargs, **({"min_new_tokens": 1} if min_new else {}))
        first = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=1,
                               **{name: recorder}, **first_kwargs)
        first = first.sequences if hasattr(first, "sequences") else first
        tok0 = first[:, s:s + 1]
        done = all(t in eos for t in tok0[:, 0].tolist())
        for press in presses:
            _reset_peak(model)
            cache = fork_cache(recorder, press.config, tail_chunk=press.tail_chunk)
            press.last_cache = cache  # as after generate: press.memory() describes this run
            if max_new_tokens > 1 and not done:
                rest_kwargs = dict(kwargs, **({"min_new_tokens": max(min_new - 1, 0)} if min_new else {}))
                # The forked cache holds the prompt, so every forward of this generate is a one-token step.
                with _decode_steps(model, cache, max_new_tokens - 1, cuda_graph):
                    out = model.generate(torch.cat([batch.input_ids, tok0], dim=1),
                                         attention_mask=torch.cat([batch.attention_mask,
                                                                   torch.ones_like(tok0)], dim=1),
                                         max_new_tokens=max_new_tokens - 1, **{name: cache}, **rest_kwargs)
                out = out.sequences if hasattr(out, "sequences") else out
                new = out[:, s:]
            else:
                new = tok0
            results.append(_result(tokenizer, new, eos, batch, cache, press))
    return results
