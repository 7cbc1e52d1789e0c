"""A whole press applied to one layer's prompt: eviction first, then key-channel pruning (spec §4).

``compress_layer`` is pure tensor math on one layer: it takes the dense prompt keys/values exactly as the cache
holds them (post-RoPE), the last prompt queries exactly as attention saw them (post-RoPE, post q_norm) and the
padding mask, and returns a :class:`~sparkv.cache.layout.CompressedKV`:

1. Tokens. With an eviction method, :func:`sparkv.methods.eviction.select_tokens` chooses the survivors of every
   (row, KV head); without one, every valid token survives. Either way each row's surviving tokens are moved to the
   front in position order (left padding dropped) and ``lengths [B]`` says how many there are; entries past
   ``lengths[b]`` are padding and never attended. Positions are baked into the keys by RoPE, so moving tokens does
   not change attention.
2. Channels of the survivors. SparK: window statistic ``a`` from the last ``channels.window`` queries
   (:func:`sparkv.methods.spark.window_statistic`, unaffected by eviction), ``DK = kept_channels(D, λ)``, then
   :func:`sparkv.kernels.select_pack.select_pack`. ThinK: channel scores over the survivors, one set of ``DK``
   channels per (row, head), stored as ``kept_values [B, H, N, DK]`` plus ``channel_idx`` int16 (really stored,
   not zeroed). No channel method: dense keys.

Every tensor of the result owns its storage exactly (no view into a larger buffer), so the bytes counted from the
layout equal the bytes allocated.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch

from sparkv.cache.layout import CompressedKV, DenseKeys, SparKKeys, ThinKKeys
from sparkv.config import PressConfig, SparKConfig, ThinKConfig, kept_channels

__all__ = ["compress_layer", "left_align", "required_prompt_tokens", "window_size", "compact"]

# Eviction methods that read the observation-window queries (StreamingLLM does not).
_WINDOWED_EVICTIONS = ("snapkv", "pyramidkv")


def window_size(press: PressConfig) -> int:
    """Number of last prompt queries ``press`` reads (max over its methods' windows; 0 if it reads none)."""
    sizes = [0]
    if press.eviction is not None and press.eviction.method in _WINDOWED_EVICTIONS:
        sizes.append(press.eviction.window)
    if press.channels is not None:
        sizes.append(press.channels.window)
    return max(sizes)


def required_prompt_tokens(press: PressConfig) -> int:
    """Fewest valid prompt tokens a row must have for ``press``: its largest observation window (at least 1).

    Unlike ``PressConfig.prompt_window`` this ignores the unused ``window`` field of a StreamingLLM eviction.
    """
    return max(1, window_size(press))


def compact(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if it is contiguous and owns its whole storage, else a compact copy."""
    if (t.is_contiguous() and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size()):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _compact_layout(layout):
    changes = {}
    for f in dataclasses.fields(layout):
        value = getattr(layout, f.name)
        if isinstance(value, torch.Tensor) and (packed := compact(value)) is not value:
            changes[f.name] = packed
    return dataclasses.replace(layout, **changes) if changes else layout


def left_align(valid_mask: torch.Tensor, num_heads: int):
    """A :class:`~sparkv.methods.eviction.TokenSelection` keeping every valid token, valid tokens first.

    ``indices [B, H, N]`` with ``N = max valid count``; a row with fewer valid tokens is padded with its (lowest)
    invalid positions, ascending, as eviction selections are.
    """
    from sparkv.methods.eviction import TokenSelection

    b, s = valid_mask.shape
    pos = torch.arange(s, device=valid_mask.device)
    lengths = valid_mask.sum(-1)
    n = int(lengths.max().item()) if b else 0
    order = torch.sort((~valid_mask).long() * s + pos, dim=-1).indices[:, :n]
    return TokenSelection(indices=order[:, None, :].expand(b, num_heads, n).contiguous(), lengths=lengths.long())


def _check_inputs(press, window_queries, keys, values, valid_mask) -> torch.Tensor:
    if not isinstance(press, PressConfig):
        raise TypeError(f"press must be a PressConfig, got {type(press).__name__}")
    if keys.dim() != 4 or values.dim() != 4 or keys.shape[:3] != values.shape[:3]:
        raise ValueError(f"keys and values must be [B, H, S, D] with equal B, H, S; got {tuple(keys.shape)} and "
                         f"{tuple(values.shape)}")
    b, h, s, d = keys.shape
    if valid_mask is None:
        valid_mask = torch.ones(b, s, dtype=torch.bool, device=keys.device)
    if valid_mask.dtype != torch.bool or tuple(valid_mask.shape) != (b, s):
        raise ValueError(f"valid_mask must be bool [B, S] = [{b}, {s}], got {valid_mask.dtype} "
                         f"{tuple(valid_mask.shape)}")
    valid_mask = valid_mask.to(keys.device)
    counts = valid_mask.sum(-1)
    shortest = int(counts.min().item()) if b else 0
    required = required_prompt_tokens(press)
    if shortest < required:
        row = int(counts.argmin().item())
        raise ValueError(
            f"context too short for press {press.name!r}: batch row {row} has {shortest} prompt tokens but the "
            f"press's observation window needs at least {required} (channels.window / eviction.window); "
            f"use a longer context or a smaller window")
    if b and bool((~valid_mask[:, -1]).any()):
        raise ValueError("valid_mask marks the last prompt position of a row as padding: right padding is not "
                         "supported, pad on the left (tokenizer.padding_side = 'left')")
    need = window_size(press)
    if need:
        if window_queries is None or window_queries.dim() != 4 or window_queries.shape[0] != b \
                or window_queries.shape[-1] != d or window_queries.shape[1] % h:
            raise ValueError(f"window_queries must be [B, HQ, W, D] with B={b}, D={d} and HQ a multiple of H={h}")
        if window_queries.shape[2] < need:
            raise ValueError(f"press {press.name!r} reads the last {need} prompt queries (its observation window) "
                             f"but only {window_queries.shape[2]} were given")
    return valid_mask


@torch.no_grad()
def compress_layer(
    press: PressConfig,
    window_queries: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    valid_mask: torch.Tensor | None,
    scaling: float | None,
    layer_idx: int,
    num_layers: int,
    backend: str | None = None,
) -> CompressedKV:
    """Compress one layer's prompt with ``press`` (eviction, then SparK or ThinK over the survivors).

    Args:
        press: the press (``PressConfig``); ``press.backend`` is used unless ``backend`` is given.
        window_queries: ``[B, HQ, W, D]``, the last W prompt queries as attention saw them, ``W >= window_size(press)``
            (may be None when the press reads no window).
        keys, values: ``[B, H, S, D]`` dense prompt, model dtype (post-RoPE keys).
        valid_mask: ``[B, S]`` bool, False on left padding (None: all valid).
        scaling: the layer's attention scale (SnapKV / PyramidKV scores).
        layer_idx, num_layers: position of the layer in the model (PyramidKV's budget).
        backend: ``auto`` | ``torch`` | ``triton`` for ``select_pack``.

    Returns:
        ``CompressedKV`` with compact tensors; ``lengths`` int32 ``[B]``.

    Raises:
        ValueError: a row has fewer valid tokens than the press's observation window, or right padding.
    """
    valid_mask = _check_inputs(press, window_queries, keys, values, valid_mask)
    backend = press.backend if backend is None else backend
    b, h, s, d = keys.shape

    # 1. Surviving tokens, left-aligned.
    if press.eviction is not None:
        from sparkv.methods.eviction import gather_tokens, select_tokens

        selection = select_tokens(press.eviction, window_queries, keys, valid_mask, scaling, layer_idx, num_layers)
    elif bool(valid_mask.all()):
        selection = None
    else:
        from sparkv.methods.eviction import gather_tokens

        selection = left_align(valid_mask, h)
    if selection is not None:
        k = gather_tokens(keys, selection)
        v = gather_tokens(values, selection)
        lengths = selection.lengths.to(device=keys.device, dtype=torch.int32)
    else:
        k, v = keys, values
        lengths = torch.full((b,), s, dtype=torch.int32, device=keys.device)

    # 2. Channels of the survivors.
    channels = press.channels
    if channels is not None and kept_channels(d, channels.channel_prune_ratio) == d:
        # λ small enough that no channel is pruned: any channel metadata would be pure overhead, and dense keys
        # let λ = 0 reproduce the dense model exactly.
        channels = None
    if isinstance(channels, SparKConfig):
        from sparkv.kernels.select_pack import select_pack
        from sparkv.methods.spark import window_statistic

        stat = window_statistic(window_queries[:, :, -channels.window:], h)
        layout = select_pack(k, stat, kept_channels(d, channels.channel_prune_ratio), saliency=channels.saliency,
                             recovery=channels.recovery, recovery_constant=channels.recovery_constant,
                             seed=channels.seed, backend=backend)
        dense_bytes = k.numel() * k.element_size()
        if layout.nbytes() >= dense_bytes:  # shown once per process (the default warning filter)
            warnings.warn(
                f"SparK at key ratio {channels.channel_prune_ratio:g} stores {layout.nbytes():,} bytes of keys here "
                f"against {dense_bytes:,} dense (head_dim {d}, {k.dtype}): the bitmaps, signs and scale of each "
                "token outweigh the channels it prunes; prune more channels for a smaller cache",
                stacklevel=2)
    elif isinstance(channels, ThinKConfig):
        from sparkv.methods.think import think_channel_scores, think_select_channels

        scores = think_channel_scores(window_queries[:, :, -channels.window:], k, lengths=lengths.long())
        idx = think_select_channels(scores, kept_channels(d, channels.channel_prune_ratio))
        kept_values = k.gather(-1, idx[:, :, None, :].expand(-1, -1, k.shape[2], -1))
        layout = ThinKKeys(kept_values=kept_values, channel_idx=idx.to(torch.int16), head_dim=d)
    elif channels is None:
        layout = DenseKeys(keys=k)
    else:  # pragma: no cover - PressConfig validates this
        raise TypeError(f"unknown channel method {type(channels).__name__}")

    layout = _compact_layout(layout)
    if isinstance(layout, SparKKeys) and layout.kept_values.dtype != keys.dtype:
        raise RuntimeError(f"select_pack returned kept values in {layout.kept_values.dtype}, expected {keys.dtype}")
    return CompressedKV(keys=layout, values=compact(v), lengths=compact(lengths))
