"""KV-cache memory accounting: the three numbers of spec §6, never only the flattering one.

``memory_report(cache)`` works on a sparkv cache (``sparkv.cache.build``) and on any transformers cache of dense
layers (``DynamicCache``), so baselines are measured the same way.

Fields of :class:`MemoryReport` (bytes, all layers, K and V):
    dense_kv_bytes      what a plain ``DynamicCache`` would hold for the same tokens: every logical position of a
                        full-attention layer (left padding included, as transformers stores it), and for a sliding
                        layer what transformers' sliding layer holds (at most ``sliding_window - 1`` tokens).
    compressed_kv_bytes exact bytes of the layouts held: kept values, bitmaps, signs, scales, per-head vectors,
                        channel indices, dense values, per-row lengths, the decode tail buffers (their whole
                        capacity, see ``tail_reserved_bytes``) and the dense sliding layers.
    allocated_kv_bytes  measured: the sum of the distinct storages behind every tensor the cache holds.
    nominal_kv_bytes    the paper-style figure: dense bytes of the surviving prompt tokens (per row, no padding)
                        times ``1 - λ/2`` (half of the KV bytes are keys), metadata ignored, plus the dense bytes of
                        the generated tail tokens and of the sliding layers.
    tail_reserved_bytes tail slots allocated but not yet filled (included in compressed and allocated).
    peak_gpu_bytes      ``torch.cuda.max_memory_allocated`` of the cache's device when it is a CUDA device, else None
                        (the caller resets the peak counter where the measurement should start).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from sparkv.cache.layout import allocated_bytes
from sparkv.config import SparKConfig, ThinKConfig

__all__ = ["MemoryReport", "memory_report"]


@dataclass
class MemoryReport:
    dense_kv_bytes: int
    compressed_kv_bytes: int
    allocated_kv_bytes: int
    nominal_kv_bytes: int
    tail_reserved_bytes: int = 0
    peak_gpu_bytes: int | None = None
    num_layers: int = 0
    compressed_layers: int = 0
    per_layer: list[dict] = field(default_factory=list, repr=False)

    @property
    def compression_ratio(self) -> float:
        """``compressed / dense`` (lower is better)."""
        return self.compressed_kv_bytes / self.dense_kv_bytes if self.dense_kv_bytes else float("nan")

    @property
    def nominal_ratio(self) -> float:
        return self.nominal_kv_bytes / self.dense_kv_bytes if self.dense_kv_bytes else float("nan")

    def to_dict(self, per_layer: bool = False) -> dict:
        out = asdict(self)
        if not per_layer:
            out.pop("per_layer")
        # None, not NaN, for a cache that holds nothing yet: NaN is not JSON.
        out["compression_ratio"] = self.compression_ratio if self.dense_kv_bytes else None
        out["nominal_ratio"] = self.nominal_ratio if self.dense_kv_bytes else None
        return out

    def summary(self) -> str:
        mib = 2.0**20
        if not self.dense_kv_bytes:
            return f"KV cache: empty ({self.num_layers} layers, no token stored yet)"
        return (f"KV cache: dense {self.dense_kv_bytes / mib:.2f} MiB, compressed {self.compressed_kv_bytes / mib:.2f} "
                f"MiB ({self.compression_ratio:.1%}), allocated {self.allocated_kv_bytes / mib:.2f} MiB, nominal "
                f"{self.nominal_kv_bytes / mib:.2f} MiB ({self.nominal_ratio:.1%})")


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.numel() * t.element_size()


def _dense_token_bytes(layer) -> int:
    """Bytes one token takes in one batch row of a dense K+V layer with this layer's heads and dtype."""
    from sparkv.cache.layer import PressedLayer

    if isinstance(layer, PressedLayer):
        p = layer.prefix
        if p is not None:
            return p.num_heads * 2 * p.head_dim * p.dtype.itemsize
        if layer.keys is not None:
            return (layer.keys[0, :, :1].numel() * layer.keys.element_size()
                    + layer.values[0, :, :1].numel() * layer.values.element_size())
        return 0
    if getattr(layer, "keys", None) is not None and layer.keys.dim() == 4:
        return layer.keys[0, :, :1].numel() * layer.keys.element_size() + \
            layer.values[0, :, :1].numel() * layer.values.element_size()
    return 0


def _batch(layer) -> int:
    from sparkv.cache.layer import PressedLayer

    if isinstance(layer, PressedLayer):
        if layer.prefix is not None:
            return layer.prefix.batch
        return layer.keys.shape[0] if layer.keys is not None else 0
    keys = getattr(layer, "keys", None)
    return keys.shape[0] if keys is not None and keys.dim() == 4 else 0


def _layer_report(layer) -> dict:
    from sparkv.cache.layer import PressedLayer

    if isinstance(layer, PressedLayer):
        tensors = layer.tensors()
        b, per_tok = _batch(layer), _dense_token_bytes(layer)
        dense = b * layer.get_seq_length() * per_tok
        tail_k, tail_v = layer.tail()
        tail_dense = _nbytes(tail_k) + _nbytes(tail_v)
        if layer.prefix is not None:
            kept_tokens = int(layer.prefix.lengths.sum().item())
            channels = layer.press.channels
            ratio = channels.channel_prune_ratio if isinstance(channels, (SparKConfig, ThinKConfig)) else 0.0
            nominal = round(kept_tokens * per_tok * (1.0 - ratio / 2.0)) + tail_dense
        else:  # dense prompt (recording or not yet compressed)
            kept_tokens = b * layer.prompt_len
            nominal = _nbytes(layer.keys) + _nbytes(layer.values) + tail_dense
        return dict(kind="compressed" if layer.prefix is not None else "dense", dense=dense,
                    compressed=layer.layout_bytes(), allocated=allocated_bytes(tensors), nominal=nominal,
                    tail_reserved=layer.tail_reserved_bytes(), kept_tokens=kept_tokens,
                    tensors=tensors)
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    tensors = [t for t in (keys, values) if isinstance(t, torch.Tensor)]
    held = sum(_nbytes(t) for t in tensors)
    kind = "sliding" if getattr(layer, "is_sliding", False) else "dense"
    return dict(kind=kind, dense=held, compressed=held, allocated=allocated_bytes(tensors), nominal=held,
                tail_reserved=0, kept_tokens=_batch(layer) * (keys.shape[-2] if tensors else 0), tensors=tensors)


def memory_report(cache, device: torch.device | str | None = None) -> MemoryReport:
    """Account a cache's KV memory (module docstring); ``device``: where to read the CUDA peak (default: the
    cache's)."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise TypeError(f"memory_report expects a transformers Cache, got {type(cache).__name__}")
    rows = [_layer_report(layer) for layer in layers]
    every = [t for r in rows for t in r.pop("tensors")]
    if device is None and every:
        device = every[0].device
    peak = None
    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        peak = int(torch.cuda.max_memory_allocated(torch.device(device)))
    return MemoryReport(
        dense_kv_bytes=sum(r["dense"] for r in rows),
        compressed_kv_bytes=sum(r["compressed"] for r in rows),
        allocated_kv_bytes=allocated_bytes(every),
        nominal_kv_bytes=sum(r["nominal"] for r in rows),
        tail_reserved_bytes=sum(r["tail_reserved"] for r in rows),
        peak_gpu_bytes=peak,
        num_layers=len(rows),
        compressed_layers=sum(r["kind"] == "compressed" for r in rows),
        per_layer=rows,
    )
