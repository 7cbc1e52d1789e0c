"""Greedy decoding with one CUDA graph per generation: the whole model's decode step captured once, replayed per token.

Why: eager decoding is bound by the host. One sparkv attention call costs the host 0.2-0.5 ms of Python and
launches, more than its GPU time (``BENCHMARKS.md``, "Session 8"), so an eager step hides the bytes the compressed
cache saves. A replayed graph launches every kernel of the step without Python.

How a captured step stays valid for every later token:

- every :class:`~sparkv.cache.layer.PressedLayer` switches to a *static tail*
  (:meth:`~sparkv.cache.layer.PressedLayer.begin_static_tail`): a fixed buffer written at a device-side index and
  read up to a device-side count (``decode_attn``'s ``tail_length``), so shapes and addresses never change;
- the step's inputs (the last token, its RoPE position, its cache position) live in fixed tensors, and the step
  itself ends by writing its argmax token into them and advancing every counter; replay k thus runs step k;
- the compressed prefix does not change after prefill, so the kernels' launches over it (grid, splits, pointers)
  are the same every step.

The first step runs eagerly (on a side stream): it builds the CUDA kernel and times the Triton launch choices, which
a capture cannot do. Then one step is captured and replayed. ``capture=False`` runs the very same static step
eagerly instead (any device), which is what the CPU tests check against ``model.generate``.

Limits (each refused with a ``ValueError``): greedy decoding only (no sampling, no logits processors); every
attention layer must be a sparkv :class:`~sparkv.cache.layer.PressedLayer` (no sliding-window layers, e.g. Gemma3);
the model's forward must not synchronise with the host during a step (``dynamic`` / ``longrope`` RoPE scaling does).
"""

from __future__ import annotations

import torch

from sparkv.cache.layer import PressedLayer

__all__ = ["greedy_decode", "check_graph_decodable"]


def _pressed_layers(cache) -> list[PressedLayer]:
    layers = list(getattr(cache, "layers", []) or [])
    if not layers:
        raise ValueError("graph decoding needs a sparkv cache (transformers.Cache of sparkv layers)")
    bad = [f"{i}: {type(layer).__name__}" for i, layer in enumerate(layers) if not isinstance(layer, PressedLayer)]
    if bad:
        raise ValueError("graph decoding needs every cache layer to be a sparkv PressedLayer (a model with "
                         f"sliding-window layers, e.g. Gemma3, decodes eagerly); found {', '.join(bad)}")
    for layer in layers:
        if layer.prefix is None or layer.pending or layer.recording:
            raise ValueError(f"graph decoding starts after prefill: cache layer {layer.layer_idx} holds no "
                             "compressed prompt")
    if len({layer.tail_len for layer in layers}) != 1:
        raise ValueError("the cache's layers hold tails of different lengths")
    return layers


def check_graph_decodable(model) -> None:
    """Refuse models whose decode step cannot be replayed from a graph (checked before any work is done)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in types):
        raise ValueError(f"cuda_graph: model_type {config.model_type!r} has {sorted(set(types))} layers; graph "
                         "decoding covers models whose every layer is full attention (decode it eagerly)")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if rope_type in ("dynamic", "longrope"):
        raise ValueError(f"cuda_graph: RoPE type {rope_type!r} reads the positions on the host every step; decode "
                         "this model eagerly")


@torch.no_grad()
def greedy_decode(model, cache, first_tokens: torch.Tensor, positions: torch.Tensor, steps: int,
                  eos: set[int] | None = None, capture: bool = True, check_every: int = 16,
                  on_step=None) -> torch.Tensor:
    """Greedy tokens after ``first_tokens``, one model step per token, from a graph (module docstring).

    Args:
        model: the causal LM the cache was filled by, running with the ``"sparkv"`` attention implementation.
        cache: its sparkv cache after prefill (the prompt compressed; a tail may already hold tokens).
        first_tokens: ``[B, 1]`` the newest token of each row, not yet in the cache.
        positions: ``[B]`` the RoPE position of ``first_tokens`` in each row (its real tokens before it).
        steps: how many tokens to generate at most.
        eos: end-of-sequence ids; decoding stops once every row has produced one (checked every ``check_every``
            steps, the only host syncs of the loop; tokens after a row's first end-of-sequence are whatever the
            model says, as in a batch of ``model.generate`` before its padding).
        capture: replay a captured CUDA graph (CUDA only); False runs the same static step eagerly.
        on_step: called on the host as ``on_step(n, logits)`` after the n-th step has been launched, ``logits``
            ``[B, V]`` float32 that step's last-position logits (one buffer, overwritten by the next step). For
            benchmarks: a callback that synchronises times the steps, one that copies the logits checks them. Step 1
            runs eagerly (it builds the kernels) and the capture happens between ``on_step(1, ...)`` and step 2, so
            steady-state timing starts after step 2.

    Returns:
        ``[B, n]`` int64, ``n <= steps`` generated tokens. The cache holds every token fed (``first_tokens`` and all
        but the last generated one), as after ``model.generate``.
    """
    from sparkv.integration.transformers import cache_kwarg

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(check_every, int) or isinstance(check_every, bool) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
    layers = _pressed_layers(cache)
    b = layers[0].prefix.values.shape[0]
    dev = layers[0].prefix.values.device
    if first_tokens.dim() != 2 or tuple(first_tokens.shape) != (b, 1):
        raise ValueError(f"first_tokens must be [B, 1] = [{b}, 1] (the cache's batch), got {tuple(first_tokens.shape)}")
    if positions.shape != (b,):
        raise ValueError(f"positions must be [B] = [{b}], got {tuple(positions.shape)}")
    if capture and dev.type != "cuda":
        raise ValueError(f"capture=True (CUDA graphs) needs the model on a CUDA device, the cache is on {dev}")
    if steps == 0:
        return torch.empty(b, 0, dtype=torch.long, device=dev)

    start = layers[0].tail_len
    prompt_len = layers[0].prompt_len
    ids = first_tokens.to(dev, torch.long).clone()
    pos_ids = positions.to(dev, torch.long).view(b, 1).clone()
    cache_pos = torch.tensor([prompt_len + start], dtype=torch.long, device=dev)
    write_index = torch.tensor([start], dtype=torch.long, device=dev)
    valid = torch.tensor([start + 1], dtype=torch.int32, device=dev)
    step_index = torch.zeros(1, dtype=torch.long, device=dev)
    tokens = torch.zeros(b, steps, dtype=torch.long, device=dev)
    kwargs = {cache_kwarg(model): cache, "use_cache": True}
    seen_logits = None if on_step is None else torch.empty(b, model.config.get_text_config().vocab_size,
                                                          dtype=torch.float32, device=dev)
    for layer in layers:
        layer.begin_static_tail(start + steps, write_index, valid)

    def step() -> None:
        logits = model(input_ids=ids, position_ids=pos_ids, cache_position=cache_pos, **kwargs).logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        if seen_logits is not None:
            seen_logits.copy_(logits)
        tokens.index_copy_(1, step_index, nxt)
        ids.copy_(nxt)
        for counter in (pos_ids, cache_pos, write_index, valid, step_index):
            counter.add_(1)

    done = 0
    graph = None
    try:
        if capture:
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                step()
            torch.cuda.current_stream(dev).wait_stream(side)
            done = 1
            if on_step is not None:
                on_step(done, seen_logits)
            if steps > 1:
                graph = torch.cuda.CUDAGraph()
                try:
                    with torch.cuda.graph(graph):
                        step()
                except RuntimeError as err:
                    raise RuntimeError(f"could not capture this model's decode step in a CUDA graph ({err}); decode "
                                       "it eagerly (cuda_graph=False)") from err
            run = graph.replay if graph is not None else step
        else:
            run = step
        stop_ids = torch.tensor(sorted(eos or ()), dtype=torch.long, device=dev)
        while done < steps:
            run()
            done += 1
            if on_step is not None:
                on_step(done, seen_logits)
            if stop_ids.numel() and (done % check_every == 0 or done == steps):
                if bool(torch.isin(tokens[:, :done], stop_ids).any(-1).all()):
                    break
        if capture:
            torch.cuda.current_stream(dev).synchronize()
    finally:
        for layer in layers:
            layer.end_static_tail(start + done)
        del graph
    return tokens[:, :done]
