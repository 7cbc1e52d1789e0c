"""sparkv: SparK's per-token key-channel pruning stored compressed for real and recovered inside attention."""

from importlib import metadata as _metadata

from sparkv.config import EvictionConfig, PressConfig, SparKConfig, ThinKConfig, parse_press

try:
    __version__ = _metadata.version("sparkv")
except _metadata.PackageNotFoundError:  # a source tree on PYTHONPATH, not installed
    __version__ = "0+unknown"

# Heavier parts (transformers, the cache) load on first use; importing sparkv registers and patches nothing.
_LAZY = {
    "Press": "sparkv.integration.transformers",
    "GenerationResult": "sparkv.integration.transformers",
    "generate": "sparkv.integration.transformers",
    "generate_many": "sparkv.integration.transformers",
    "MemoryReport": "sparkv.memory",
    "memory_report": "sparkv.memory",
    "build_cache": "sparkv.cache.build",
    "compress_layer": "sparkv.methods.compose",
    "load_model": "sparkv.models",
}


__all__ = ["EvictionConfig", "PressConfig", "SparKConfig", "ThinKConfig", "parse_press", *_LAZY]


def __dir__():
    return sorted({*globals(), *_LAZY} - {"_metadata"})


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparkv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
