"""Framework integrations. ``sparkv.integration.transformers``: attention + mask under ``"sparkv"``, ``Press``,
``generate``, ``generate_many`` (nothing is registered or patched at import)."""

_EXPORTS = ("Press", "GenerationResult", "generate", "generate_many", "register", "use_sparkv_attention",
            "check_model_supported", "SUPPORTED_MODEL_TYPES")


def __getattr__(name):
    if name in _EXPORTS:
        from sparkv.integration import transformers as _tf

        return getattr(_tf, name)
    raise AttributeError(f"module 'sparkv.integration' has no attribute {name!r}")


__all__ = list(_EXPORTS)
