"""Build a transformers ``Cache`` of sparkv layers for a model.

One layer per decoder layer, by the text config's ``layer_types``:
    ``full_attention``    -> :class:`~sparkv.cache.layer.PressedLayer` (compressed with the press)
    ``sliding_attention`` -> :class:`~sparkv.cache.layer.DenseSlidingLayer` (transformers' sliding layer, dense)
Other layer types raise. The cache is a :class:`SparkvCache`, a ``transformers.Cache(layers=[...])`` whose batch
and beam operations select rows of every layer, or are refused before any layer changes (mid-prefill, under graph
decoding, a crop that would cut a compressed prompt); no layer type is registered globally.
"""

from __future__ import annotations

import copy

import torch
from transformers.cache_utils import Cache

from sparkv.cache.layer import DEFAULT_TAIL_CHUNK, DenseSlidingLayer, PressedLayer, crop_amount
from sparkv.cache.layout import check_row_index
from sparkv.config import PressConfig

__all__ = ["SparkvCache", "build_cache", "fork_cache", "layer_types", "text_config"]

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


class SparkvCache(Cache):
    """``transformers.Cache`` over sparkv layers. Beam search's reordering and transformers' batch slicing and
    repeating select rows of every layer (``PressedLayer.select_rows``); crops that would cut a compressed prompt
    are refused. transformers applies these operations layer by layer, so they are checked here first, leaving a
    mixed cache (Gemma3's dense sliding layers) untouched when refused."""

    def _select_rows(self, index, name: str, others) -> None:
        """Check every sparkv layer's state and ``index`` once, before any layer changes; then the sparkv layers
        take the checked rows (no check, no read back per layer) and the others run ``others(layer)``."""
        pressed = [layer for layer in self.layers if isinstance(layer, PressedLayer)]
        for layer in pressed:
            layer.check_rows_selectable()
        held = [layer for layer in pressed if layer.batch_rows() is not None]
        rows = None if not held else check_row_index(index, held[0].batch_rows(), held[0].device, name)
        for layer in self.layers:
            if isinstance(layer, PressedLayer):
                if rows is not None:
                    layer.select_rows(rows, name, checked=True)
            else:
                others(layer)

    def prefilled(self) -> bool:
        """Whether every sparkv layer holds its compressed prompt (the prefill is over)."""
        return all(layer.prefix is not None for layer in self.layers if isinstance(layer, PressedLayer))

    def expect_prefill(self, tokens: int) -> None:
        """A chunked prefill of ``tokens`` prompt positions is coming (``PressedLayer.expect_prefill``)."""
        for layer in self.layers:
            if isinstance(layer, PressedLayer):
                layer.expect_prefill(tokens)

    def activate_past_recording(self) -> None:
        """transformers calls this before assisted decoding (and an assistant's own generate). A sparkv cache serves it
        only empty and with the prompt's length announced (``expect_prefill``, which a press's ``generate`` does),
        so that the candidates verified in the prompt's forward are not compressed with the prompt; refused before
        anything changes otherwise."""
        pressed = [layer for layer in self.layers if isinstance(layer, PressedLayer)]
        if any(layer.prefix is not None or layer.keys is not None for layer in pressed):
            raise ValueError("assisted decoding and prompt lookup need an empty sparkv cache: transformers feeds their "
                             "first forward the whole input again, which a cache holding a prompt would append after "
                             "it; start from a fresh cache with the whole conversation as the prompt")
        if any(layer.prefill_tokens is None for layer in pressed):
            raise ValueError("assisted decoding and prompt lookup over a sparkv cache need the prompt's length "
                             "announced before the first forward, so that the candidates verified with it are not "
                             "compressed with it: run model.generate inside `with press(model):` (or "
                             "sparkv.generate), or call cache.expect_prefill(prompt_tokens) first")
        super().activate_past_recording()

    def end_past_recording(self) -> None:
        """Stop recording past states after a generation that turned it on (assisted decoding): the dense sliding
        layers go back to holding their window (``DenseSlidingLayer.end_past_recording``)."""
        for layer in self.layers:
            if isinstance(layer, DenseSlidingLayer):
                layer.end_past_recording()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._select_rows(beam_idx, "beam_idx", lambda layer: layer.reorder_cache(beam_idx))

    def batch_repeat_interleave(self, repeats: int) -> None:
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
        if repeats == 1:
            return
        held = [layer.batch_rows() for layer in self.layers if isinstance(layer, PressedLayer)]
        rows = next((r for r in held if r is not None), 0)
        self._select_rows(torch.arange(rows).repeat_interleave(repeats), "repeats",
                          lambda layer: layer.batch_repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select_rows(indices, "indices", lambda layer: layer.batch_select_indices(indices))

    def crop(self, tokens_to_remove: int) -> None:
        """Remove decode-tail tokens (assisted decoding and prompt lookup reject candidates this way); refused before
        any layer changes when it would cut into a compressed prompt."""
        tokens_to_remove = crop_amount(tokens_to_remove)  # one read of a count given as a tensor, not one a layer
        for layer in self.layers:
            if isinstance(layer, PressedLayer):
                layer.check_crop(tokens_to_remove)
        super().crop(tokens_to_remove)

    def __reduce_ex__(self, protocol):
        raise TypeError("a sparkv cache cannot be pickled or saved: its layers are bound to the model they were built "
                        "for (copy.deepcopy works; to keep a prompt, keep its text and prefill again)")

    def __deepcopy__(self, memo: dict) -> SparkvCache:
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            setattr(new, name, copy.deepcopy(value, memo))
        return new


def text_config(model_or_config):
    """The decoder text config of a model or config (``config.text_config`` for multimodal Gemma3)."""
    config = getattr(model_or_config, "config", model_or_config)
    getter = getattr(config, "get_text_config", None)
    return getter(decoder=True) if getter is not None else config


def layer_types(config) -> list[str]:
    """Per-layer attention type of a text config (``layer_types``, else inferred from ``sliding_window``)."""
    n = config.num_hidden_layers
    types = getattr(config, "layer_types", None)
    if types is None:
        sliding = getattr(config, "sliding_window", None)
        types = ["sliding_attention" if sliding is not None else "full_attention"] * n
    types = list(types)[:n]
    for i, t in enumerate(types):
        if t not in SUPPORTED_LAYER_TYPES:
            raise ValueError(f"layer {i} has attention type {t!r}; sparkv supports {', '.join(SUPPORTED_LAYER_TYPES)}")
    if "full_attention" not in types:
        raise ValueError(
            f"every layer of this model uses sliding-window attention (sliding_window={config.sliding_window}, no "
            "layer_types: transformers' own cache slides every layer too); sparkv compresses full-attention layers "
            "only. Where the model attends fully (Llama ignores the field; Mistral checkpoints whose window exceeds "
            "your contexts), set config.sliding_window = None")
    return types


def build_cache(model_or_config, press: PressConfig | None, *, tail_chunk: int = DEFAULT_TAIL_CHUNK,
                record_window: int = 0, check: bool = True) -> Cache:
    """A fresh cache for ``model_or_config`` that compresses every full-attention layer with ``press``.

    Args:
        model_or_config: a transformers model or its config.
        press: the press; None builds a *recording* cache (dense prefill kept, see :func:`fork_cache`).
        tail_chunk: decode tail growth, in tokens.
        record_window: recording caches only: number of last prompt queries kept per layer.
        check: run the architecture check (``sparkv.integration.transformers.check_model_supported``).
    """
    if check:
        from sparkv.integration.transformers import check_model_supported

        check_model_supported(model_or_config)
    if press is not None and not isinstance(press, PressConfig):
        raise TypeError(f"press must be a PressConfig, got {type(press).__name__}")
    config = text_config(model_or_config)
    types = layer_types(config)
    n = len(types)
    pressed = [i for i, t in enumerate(types) if t != "sliding_attention"]
    layers = []
    for i, t in enumerate(types):
        if t == "sliding_attention":
            layers.append(DenseSlidingLayer(sliding_window=config.sliding_window))
        else:  # PyramidKV's budget runs over the pressed layers only (PressedLayer, ``pressed``)
            layers.append(PressedLayer(press, i, n, tail_chunk=tail_chunk, record_window=record_window,
                                       config=config, pressed=(pressed.index(i), len(pressed))))
    return SparkvCache(layers=layers)


@torch.no_grad()
def fork_cache(recorded: Cache, press: PressConfig, *, tail_chunk: int | None = None) -> Cache:
    """A new cache holding ``recorded``'s prefill compressed with ``press``; ``recorded`` is left unchanged.

    ``recorded`` must come from ``build_cache(model, None, record_window=W)`` with ``W`` at least the press's window,
    after one prefill pass under the ``"sparkv"`` attention implementation.
    """
    layers = []
    for layer in recorded.layers:
        if isinstance(layer, PressedLayer):
            layers.append(layer.fork(press, tail_chunk))
        elif isinstance(layer, DenseSlidingLayer):
            layers.append(layer.copy())
        else:
            raise TypeError(f"cannot fork a cache layer of type {type(layer).__name__}")
    return SparkvCache(layers=layers)
