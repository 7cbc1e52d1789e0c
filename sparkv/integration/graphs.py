"""Decoding from CUDA graphs: the whole model's decode step captured once per generation, replayed per token.

Why: eager decoding is bound by the host. One sparkv attention call costs the host 0.2-0.5 ms of Python and
launches, more than its GPU time (``BENCHMARKS.md``, "Session 8"), so an eager step hides the bytes the compressed
cache saves. A replayed graph launches every kernel of the step without Python.

How a captured step stays valid for every later token (:class:`StaticStep`):

- every :class:`~sparkv.cache.layer.PressedLayer` switches to a *static tail*
  (:meth:`~sparkv.cache.layer.PressedLayer.begin_static_tail`): a fixed buffer written at a device-side index and
  read up to a device-side count (``decode_attn``'s ``tail_length``), so shapes and addresses never change;
- the step's inputs (the token, its RoPE position, its cache position) live in fixed tensors; the step derives the
  tail's index and count from the cache position itself;
- the compressed prefix does not change after prefill, so the kernels' launches over it (grid, splits, pointers)
  are the same every step.

The first step runs eagerly (on a side stream): it builds the CUDA kernel and times the Triton launch choices, which
a capture cannot do. Then one step is captured and replayed. ``capture=False`` runs the very same static step
eagerly instead (any device): that is what the CPU tests check against plain ``model.generate``.

Two drivers:

- :func:`replay_decode_steps`: ``model.generate`` runs as usual (sampling, logits processors, stopping criteria,
  streamers: all transformers' own), but each of its one-token forwards over the cache is a replay; the host still
  runs transformers' generation loop between steps. ``sparkv.generate(..., cuda_graph=True)`` uses it.
- :func:`greedy_decode`: greedy tokens from a loop whose step also picks the token and advances the inputs inside
  the graph, so the host does nothing between replays (benchmarks; the lower bound of a step's time).

Limits (each refused with a ``ValueError``): every cache layer must be a sparkv
:class:`~sparkv.cache.layer.PressedLayer` (no sliding-window layers, e.g. Gemma3); the model on one CUDA device; the
model's forward must not synchronise with the host during a step (``dynamic`` / ``longrope`` RoPE scaling does).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from sparkv.cache.layer import PressedLayer

__all__ = ["ReplayStats", "StaticStep", "check_graph_decodable", "greedy_decode", "replay_decode_steps"]


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
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise ValueError(f"cuda_graph=True needs the whole model on one CUDA device, its parameters are on "
                         f"{', '.join(sorted(str(d) for d in devices))}")


@functools.cache
def _warm_up_stream(device: torch.device) -> torch.cuda.Stream:
    """The one side stream of ``device`` on which every capture's eager warm-up runs.

    cuBLAS keeps a workspace (32 MiB on an H200) for every stream it has run on, for the life of the process. A new
    stream for each generation held one more of them every time, up to torch's pool of 32 streams a device: 32 MiB
    more after each graph-decoded generation on one H200 (``BENCHMARKS.md``, "Session 35")."""
    return torch.cuda.Stream(device)


class StaticStep:
    """One decode step of ``model`` over ``cache`` with every input in a fixed tensor, capturable in a CUDA graph.

    Construction switches every layer of ``cache`` to a static tail of ``steps`` more tokens; :meth:`close` switches
    them back (call it once, whatever happened). Set :attr:`ids` ``[B, 1]``, :attr:`position_ids` ``[B, 1]`` and
    :attr:`cache_position` ``[1]`` (all int64), then :meth:`run` (eager) or :meth:`replay`.

    Args:
        forward: the model's forward to call (``model.forward`` unwrapped: :func:`replay_decode_steps` replaces the
            model's own).
        model: the causal LM the cache was filled by, running with the ``"sparkv"`` attention implementation.
        cache: its sparkv cache after prefill (the prompt compressed; a tail may already hold tokens).
        steps: how many more tokens the tail must take.
    """

    def __init__(self, forward, model, cache, steps: int) -> None:
        from sparkv.integration.transformers import cache_kwarg

        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        self.layers = _pressed_layers(cache)
        self.batch = self.layers[0].prefix.batch
        self.device = dev = self.layers[0].prefix.device
        self.start = self.layers[0].tail_len
        self.prompt_len = self.layers[0].prompt_len
        self.capacity = self.start + steps
        self.ids = torch.zeros(self.batch, 1, dtype=torch.long, device=dev)
        self.position_ids = torch.zeros(self.batch, 1, dtype=torch.long, device=dev)
        self.cache_position = torch.zeros(1, dtype=torch.long, device=dev)
        self._write_index = torch.zeros(1, dtype=torch.long, device=dev)
        self._valid = torch.zeros(1, dtype=torch.int32, device=dev)  # int32: what the GPU runs were made with
        self._forward = forward
        self._kwargs = {cache_kwarg(model): cache, "use_cache": True}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None  # the captured step's output ([B, 1, V])
        for layer in self.layers:
            layer.begin_static_tail(self.capacity, self._write_index, self._valid)

    def run(self):
        """The step, eagerly: the model's output (its ``logits`` ``[B, 1, V]``)."""
        # The tail slot of this token and the tokens attended, from the cache position (prompt positions + tail).
        torch.sub(self.cache_position, self.prompt_len, out=self._write_index)
        self._valid.copy_(self._write_index + 1)
        return self._forward(input_ids=self.ids, position_ids=self.position_ids, cache_position=self.cache_position,
                             **self._kwargs)

    def warm_up_and_capture(self, body=None):
        """Run ``body`` (default: :meth:`run`) once eagerly on a side stream (it builds and times kernels), then
        capture it; returns the eager run's result. Replays then repeat the captured body."""
        body = body or self.run
        side = _warm_up_stream(self.device)  # a CUDA tensor's device, so always with its index
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            eager = body()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                captured = body()
        except RuntimeError as err:
            self.graph = None
            raise RuntimeError(f"could not capture this model's decode step in a CUDA graph ({err}); decode it "
                               "eagerly (cuda_graph=False)") from err
        self.logits = getattr(captured, "logits", None)
        return eager

    def replay(self) -> None:
        self.graph.replay()

    def close(self, fed: int) -> None:
        """Back to growing tails holding ``fed`` more tokens than before (the steps that ran); frees the graph."""
        for layer in self.layers:
            layer.end_static_tail(self.start + fed)
        self.graph = None
        self.logits = None


@dataclass
class ReplayStats:
    """What :func:`replay_decode_steps` did: one-token steps taken over the cache, and how many were replays."""

    steps: int = 0
    replays: int = 0


@contextmanager
def replay_decode_steps(model, cache, steps: int, capture: bool = True):
    """Inside the block, ``model.generate`` over ``cache`` replays its one-token steps from a CUDA graph.

    The model's ``forward`` is wrapped for the block: a call with one new token over ``cache`` (after prefill) sets
    the :class:`StaticStep` inputs from the call's ``input_ids`` / ``position_ids`` / ``cache_position`` and, from
    the second such call on, replays the captured step (the first runs eagerly and captures); every other call (the
    prefill, another cache, a multi-token forward, ``output_attentions`` / ``output_hidden_states``) goes to the
    model's own forward. A call given no ``position_ids`` gets the model's own choice (the attention mask's count of
    real tokens, else the cache's length). transformers' generation loop is unchanged: its processors, sampling and
    stopping criteria see the replayed logits as they would the eager ones.

    Args:
        steps: the most one-token steps the block may run (``max_new_tokens`` of a ``generate`` whose prefill is
            in the block); one more is refused with a ``RuntimeError`` before it writes anything.
        capture: False runs the static step eagerly every call (any device; tests).

    Yields a :class:`ReplayStats`. On exit the cache's layers hold a growing tail again with the tokens the steps
    fed.
    """
    from sparkv.integration.transformers import cache_kwarg

    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    name = cache_kwarg(model)
    original = model.forward
    state: dict = {"step": None, "template": None}
    stats = ReplayStats()

    def replayable(kwargs) -> bool:
        ids = kwargs.get("input_ids")
        return (kwargs.get(name) is cache and ids is not None and ids.dim() == 2 and ids.shape[1] == 1
                and kwargs.get("inputs_embeds") is None
                and not kwargs.get("output_attentions") and not kwargs.get("output_hidden_states")
                # after prefill (once the step exists, it is)
                and (state["step"] is not None
                     or all(layer.prefix is not None for layer in cache.layers if isinstance(layer, PressedLayer))))

    @functools.wraps(original)  # transformers reads forward's signature (position_ids, logits_to_keep, ...)
    def forward(*args, **kwargs):
        if args or not replayable(kwargs):
            return original(*args, **kwargs)
        if state["step"] is None:
            state["step"] = StaticStep(original, model, cache, steps)
        step: StaticStep = state["step"]
        if stats.steps >= steps:
            raise RuntimeError(f"replay_decode_steps: more than steps={steps} one-token forwards over the cache")
        ids = kwargs["input_ids"]
        # Where transformers gives no positions (5.24 passes neither), what the model itself would use: a row's
        # real tokens before this one (its attention mask's count), else the cache's length. The cache position
        # (prompt positions + tail) is counted here: the layers' host-side tail length stands still meanwhile.
        seen = step.prompt_len + step.start + stats.steps
        positions = kwargs.get("position_ids")
        if positions is None:
            mask = kwargs.get("attention_mask")
            positions = mask.long().sum(-1, keepdim=True) - 1 if mask is not None and mask.dim() == 2 else None
        if positions is None:
            step.position_ids.fill_(seen)
        else:
            step.position_ids.copy_(positions.reshape(ids.shape[0], 1))
        step.ids.copy_(ids)
        step.cache_position.fill_(seen)
        stats.steps += 1
        if not capture:
            return step.run()
        if step.graph is None:
            out = step.warm_up_and_capture()
            state["template"] = out
            return out
        step.replay()
        stats.replays += 1
        out = dict(state["template"].items())
        out["logits"] = step.logits
        return type(state["template"])(**out)

    object.__setattr__(model, "forward", forward)
    try:
        yield stats
    finally:
        model.__dict__.pop("forward", None)
        if state["step"] is not None:
            state["step"].close(stats.steps)


@torch.no_grad()
def greedy_decode(model, cache, first_tokens: torch.Tensor, positions: torch.Tensor, steps: int,
                  eos: set[int] | None = None, capture: bool = True, check_every: int = 16,
                  on_step=None) -> torch.Tensor:
    """Greedy tokens after ``first_tokens``, one model step per token, the host idle between replays.

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
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(check_every, int) or isinstance(check_every, bool) or check_every < 1:
        raise ValueError(f"check_every must be an integer >= 1, got {check_every!r}")
    layers = _pressed_layers(cache)
    b = layers[0].prefix.batch
    dev = layers[0].prefix.device
    if first_tokens.dim() != 2 or tuple(first_tokens.shape) != (b, 1):
        raise ValueError(f"first_tokens must be [B, 1] = [{b}, 1] (the cache's batch), got {tuple(first_tokens.shape)}")
    if positions.shape != (b,):
        raise ValueError(f"positions must be [B] = [{b}], got {tuple(positions.shape)}")
    if capture and dev.type != "cuda":
        raise ValueError(f"capture=True (CUDA graphs) needs the model on a CUDA device, the cache is on {dev}")
    if steps == 0:
        return torch.empty(b, 0, dtype=torch.long, device=dev)

    s = StaticStep(model.forward, model, cache, steps)
    s.ids.copy_(first_tokens)
    s.position_ids.copy_(positions.view(b, 1))
    s.cache_position.fill_(s.prompt_len + s.start)
    step_index = torch.zeros(1, dtype=torch.long, device=dev)
    tokens = torch.zeros(b, steps, dtype=torch.long, device=dev)
    seen_logits = None if on_step is None else torch.empty(b, model.config.get_text_config().vocab_size,
                                                          dtype=torch.float32, device=dev)

    def body() -> None:
        # The whole step on the device: the model, the argmax, and the next step's inputs.
        logits = s.run().logits[:, -1]
        nxt = logits.argmax(-1, keepdim=True)
        if seen_logits is not None:
            seen_logits.copy_(logits)
        tokens.index_copy_(1, step_index, nxt)
        s.ids.copy_(nxt)
        for counter in (s.position_ids, s.cache_position, step_index):
            counter.add_(1)

    done = 0
    try:
        if capture:
            if steps > 1:
                s.warm_up_and_capture(body)
            else:
                body()
            done = 1
            if on_step is not None:
                on_step(done, seen_logits)
            run = s.replay
        else:
            run = body
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
        s.close(done)
    return tokens[:, :done]
