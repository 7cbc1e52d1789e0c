"""Resolved configuration of an evaluation run: defaults < YAML file (``--config``) < command line.

Press sweeps: ``presses`` lists press specs of :func:`sparkv.config.parse_press` (``full``, ``snapkv``,
``snapkv+spark``...). ``key_ratios``, ``recoveries`` and ``budgets`` may hold several values; every press that
uses the parameter is expanded over them (a press without channel pruning is not repeated per key ratio), and one
prefill serves all resulting presses of a sample.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sparkv.config import RECOVERY_VARIANTS, SALIENCY_VARIANTS, PressConfig, parse_press

BENCHMARKS = ("ruler", "niah", "longbench")


class EvalError(ValueError):
    """A user-facing problem with an evaluation request (bad option, missing data, context too long...)."""


def _as_list(value: Any) -> list:
    """``"a,b"`` / ``["a", "b,c"]`` / scalar -> flat list of stripped items."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list = []
    for item in items:
        if isinstance(item, str):
            out += [p.strip() for p in item.split(",") if p.strip()]
        else:
            out.append(item)
    return out


def _floats(name: str, value: Any) -> list[float]:
    try:
        return [float(v) for v in _as_list(value)]
    except (TypeError, ValueError):
        raise EvalError(f"{name} must be numbers separated by commas, got {value!r}") from None


def _ints(name: str, value: Any) -> list[int]:
    out = []
    for v in _as_list(value):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise EvalError(f"{name} must be integers separated by commas, got {value!r}") from None
        if f != int(f):
            raise EvalError(f"{name} must be integers, got {v!r}")
        out.append(int(f))
    return out


@dataclass
class EvalConfig:
    """Everything that defines an evaluation run (saved as ``config.json`` beside the results).

    Attributes (common):
        benchmark: ``ruler``, ``niah`` or ``longbench``.
        model: ``smollm2`` (packaged default), a local folder or a hub id.
        presses: press specs (``full``, ``snapkv+spark``...).
        key_ratios: λ values for channel pruning (SparK / ThinK).
        budgets: token budgets of the eviction methods (``None``: parse_press's default 512 unless token_ratio).
        token_ratio: evict this fraction of prompt tokens instead of a fixed budget.
        recoveries: SparK recovery variants.
        saliency, recovery_constant, backend: passed to every press.
        limit: samples per task (RULER: per task and length; default 100 there), ``None`` for all.
        seed: seed of the generated data (RULER) and of the sampled recoveries.
        max_context: refuse prompts (+ generation) longer than this; default the model's
            ``max_position_embeddings``.
        max_new_tokens: override each task's own generation length.
        chat_template: wrap prompts in the tokenizer's chat template (LongBench applies its own per-task rule).
        dtype, device: model placement.
        out: output folder (default ``runs/<benchmark>``).
        shard: ``"I/N"``: generate only every N-th sample starting at the I-th (0-based), so N processes (one per
            GPU, or several on one GPU) fill the same output folder; metrics cover every row present.
    Attributes (per benchmark):
        tasks: RULER or LongBench task names (default: all).
        lengths: RULER / NIAH lengths in tokens.
        depths: NIAH needle depths in [0, 1].
        haystack: text files (or folders of ``*.txt``); default the Paul Graham essays.
        needle, question, answer: NIAH's needle and its question / expected answer.
        data_dir, max_length, longbench_e: LongBench data folder, prompt length cap (tokens; default the
            model's context minus the task's generation length and the prompt template's tokens), LongBench-E
            files and length buckets.
    """

    benchmark: str = "ruler"
    model: str = "smollm2"
    presses: list[str] = field(default_factory=lambda: ["full"])
    key_ratios: list[float] = field(default_factory=lambda: [0.5])
    budgets: list[int] | None = None
    token_ratio: float | None = None
    recoveries: list[str] = field(default_factory=lambda: ["mean"])
    saliency: str = "code"
    recovery_constant: float = 0.01
    backend: str = "auto"
    limit: int | None = None
    seed: int = 42
    max_context: int | None = None
    max_new_tokens: int | None = None
    chat_template: bool = True
    dtype: str | None = None
    device: str | None = None
    out: str | None = None
    shard: str | None = None
    tasks: list[str] | None = None
    lengths: list[int] | None = None
    depths: list[float] | None = None
    haystack: list[str] | None = None
    needle: str | None = None
    question: str | None = None
    answer: str | None = None
    data_dir: str | None = None
    max_length: int | None = None
    longbench_e: bool = False

    # Fields whose change invalidates earlier predictions of the same (task, sample id, press).
    DATA_FIELDS = ("benchmark", "model", "seed", "max_new_tokens", "chat_template", "dtype", "haystack", "needle",
                   "question", "answer", "data_dir", "max_length", "longbench_e", "saliency", "recovery_constant",
                   "backend")

    def __post_init__(self) -> None:
        if self.benchmark not in BENCHMARKS:
            raise EvalError(f"benchmark must be one of {', '.join(BENCHMARKS)}; got {self.benchmark!r}")
        if self.out is None:
            self.out = f"runs/{self.benchmark}"
        self.presses = [p.lower() for p in _as_list(self.presses)] or ["full"]
        self.key_ratios = _floats("key_ratio", self.key_ratios) or [0.5]
        self.budgets = _ints("budget", self.budgets) or None
        self.recoveries = [str(r) for r in _as_list(self.recoveries)] or ["mean"]
        for r in self.recoveries:
            if r not in RECOVERY_VARIANTS:
                raise EvalError(f"recovery must be one of {', '.join(RECOVERY_VARIANTS)}; got {r!r}")
        if self.saliency not in SALIENCY_VARIANTS:
            raise EvalError(f"saliency must be one of {', '.join(SALIENCY_VARIANTS)}; got {self.saliency!r}")
        if self.token_ratio is not None and self.budgets:
            raise EvalError("give either --budget or --token-ratio, not both")
        for name in ("limit", "max_context", "max_new_tokens", "max_length"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise EvalError(f"{name} must be a positive integer, got {value!r}")
        # Repeated tasks / lengths / depths name the same samples: keep the first of each (in order).
        self.tasks = list(dict.fromkeys(str(t) for t in _as_list(self.tasks))) or None
        self.lengths = list(dict.fromkeys(_ints("lengths", self.lengths) or [])) or None
        if self.lengths and min(self.lengths) < 1:
            raise EvalError(f"lengths must be positive, got {self.lengths}")
        self.depths = list(dict.fromkeys(_floats("depths", self.depths) or [])) or None
        if self.depths and not all(0.0 <= d <= 1.0 for d in self.depths):
            raise EvalError(f"depths must be fractions in [0, 1] (0.25 = a quarter in), got {self.depths}")
        for name in ("needle", "question", "answer"):
            value = getattr(self, name, None)
            if value is not None and not str(value).strip():
                raise EvalError(f"{name} must not be empty (leave it out for the default)")
        self.haystack = [str(h) for h in _as_list(self.haystack)] or None
        self.shard_slice()  # validate
        self.press_configs()  # validate every press now, before any model is loaded

    def shard_slice(self) -> tuple[int, int]:
        """``(index, count)`` of :attr:`shard` (``(0, 1)`` when unsharded)."""
        if self.shard is None:
            return 0, 1
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(self.shard))
        if not match or not 0 <= int(match[1]) < int(match[2]):
            raise EvalError(f"shard must be I/N with 0 <= I < N (e.g. 0/4 ... 3/4); got {self.shard!r}")
        return int(match[1]), int(match[2])

    def press_configs(self) -> list[tuple[str, str, PressConfig]]:
        """All presses of the sweep as ``(label, spec, PressConfig)``, in order, without duplicates."""
        out: dict[str, tuple[str, str, PressConfig]] = {}
        for spec in self.presses:
            parts = [part.strip() for part in spec.split("+")]
            has_channels = any(p in ("spark", "think") for p in parts)
            has_eviction = any(p in ("snapkv", "pyramidkv", "streamingllm") for p in parts)
            ratios = self.key_ratios if has_channels else [0.5]
            recoveries = self.recoveries if "spark" in parts else ["mean"]
            budgets = self.budgets if (has_eviction and self.budgets) else [None]
            for ratio in ratios:
                for recovery in recoveries:
                    for budget in budgets:
                        try:
                            press = parse_press(
                                spec, key_ratio=ratio, budget=budget, token_ratio=self.token_ratio,
                                recovery=recovery, saliency=self.saliency,
                                recovery_constant=self.recovery_constant, backend=self.backend,
                            )
                        except (ValueError, TypeError) as exc:
                            raise EvalError(f"press {spec!r}: {exc}") from None
                        label = press_label(press)
                        out.setdefault(label, (label, spec, press))
        return list(out.values())

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def resolve(cls, benchmark: str, yaml_path: str | Path | None = None,
                cli: dict[str, Any] | None = None) -> "EvalConfig":
        """Defaults < YAML file < command line (``None`` on the command line means "not given")."""
        values: dict[str, Any] = {}
        if yaml_path is not None:
            values.update(load_yaml(yaml_path))
        values.update({k: v for k, v in (cli or {}).items() if v is not None})
        values["benchmark"] = benchmark
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise EvalError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        return cls(**values)


ALIASES = {"press": "presses", "key_ratio": "key_ratios", "budget": "budgets", "recovery": "recoveries",
           "task": "tasks", "length": "lengths", "depth": "depths"}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping of option names (``key-ratio`` or ``key_ratio``; singular or plural)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise EvalError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise EvalError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise EvalError(f"config file {str(p)!r} must hold a mapping of option: value")
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        out[ALIASES.get(name, name)] = value
    return out


def _num(x: float) -> str:
    from sparkv.eval.tasks.common import num_label

    return num_label(x)


def press_label(press: PressConfig) -> str:
    """Unique, readable name of a press with its parameters: ``full``, ``snapkv@128``, ``snapkv@r0.5``,
    ``snapkv@128+spark@0.5``, ``spark@0.8/zero``, ``spark@0.5/constant0.01``, ``think@0.5``..."""
    parts = []
    ev = press.eviction
    if ev is not None:
        size = f"{ev.token_budget}" if ev.token_budget is not None else f"r{_num(ev.token_ratio)}"
        parts.append(f"{ev.method}@{size}")
    ch = press.channels
    if ch is not None:
        text = f"{ch.method}@{_num(ch.channel_prune_ratio)}"
        if ch.method == "spark":
            if ch.recovery != "mean":
                text += f"/{ch.recovery}" + (_num(ch.recovery_constant) if ch.recovery == "constant" else "")
            if ch.saliency != "code":
                text += f"/{ch.saliency}"
        parts.append(text)
    return "+".join(parts) if parts else "full"


def press_meta(label: str, spec: str, press: PressConfig) -> dict[str, Any]:
    """Flat description of a press, stored in every prediction row and in metrics.json."""
    ev, ch = press.eviction, press.channels
    return {
        "label": label,
        "press": spec,
        "method": press.name,
        "key_ratio": ch.channel_prune_ratio if ch is not None else None,
        "budget": ev.token_budget if ev is not None else None,
        "token_ratio": ev.token_ratio if ev is not None else None,
        "recovery": getattr(ch, "recovery", None) if ch is not None else None,
    }


def replace(cfg: EvalConfig, **changes: Any) -> EvalConfig:
    return dataclasses.replace(cfg, **changes)
