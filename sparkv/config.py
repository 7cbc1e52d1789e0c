"""Validated configuration dataclasses for every compression method sparkv offers.

A *press* is at most one token-eviction method followed by at most one key-channel pruning method
(spec §4: eviction chooses the surviving tokens first, then channels of the survivors are pruned).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Literal

SALIENCY_VARIANTS = ("code", "paper")
RECOVERY_VARIANTS = ("mean", "mean_linear", "zero", "constant", "gaussian", "exponential")
EVICTION_METHODS = ("snapkv", "pyramidkv", "streamingllm")
CHANNEL_METHODS = ("spark", "think")
BACKENDS = ("auto", "torch", "triton")


MAX_RECOVERY_CONSTANT = 65504.0


def _check_ratio(name: str, value: float) -> float:
    """``value`` as a Python float (NumPy scalars too, so that sweeps built with NumPy work and configs stay JSON)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not (0.0 <= float(value) < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: int, minimum: int = 1) -> int:
    """``value`` as a Python int (NumPy integers too)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def kept_channels(head_dim: int, channel_prune_ratio: float) -> int:
    """Channels kept per token: ``T = D - floor(λ·D)`` (spec §Notation); at least 1 for any λ < 1, as in exact
    arithmetic."""
    # λ·D in floating point may land just below the integer it stands for (0.29 * 100 = 28.999999999999996): a
    # tolerance relative to D (float error is ~1e-16 of it) absorbs that without moving a λ really below an integer
    # boundary, such as 0.49999999999 at D = 64, across it.
    n_pruned = math.floor(channel_prune_ratio * head_dim + 1e-12 * head_dim)
    return head_dim - min(n_pruned, head_dim - 1)


@dataclass
class SparKConfig:
    """SparK: query-aware unstructured key-channel pruning with recovery (spec §1-§3).

    Attributes:
        channel_prune_ratio: λ in [0, 1); ``floor(λ·D)`` key channels are pruned per token.
        saliency: ``"code"`` (``a_j·K²``, the authors' code, default) or ``"paper"`` (``a_j·|K|``).
        recovery: how pruned entries are recovered inside attention (``"mean"`` default).
        recovery_constant: magnitude for ``recovery="constant"``.
        window: number of last prompt queries in the observation window ``W``.
        seed: seed of the counter-based sampler of the ``gaussian`` / ``exponential`` recoveries.
    """

    channel_prune_ratio: float = 0.5
    saliency: Literal["code", "paper"] = "code"
    recovery: Literal["mean", "mean_linear", "zero", "constant", "gaussian", "exponential"] = "mean"
    recovery_constant: float = 0.01
    window: int = 32
    seed: int = 0
    method: str = field(default="spark", init=False)

    def __post_init__(self) -> None:
        self.channel_prune_ratio = _check_ratio("channel_prune_ratio (key ratio λ)", self.channel_prune_ratio)
        _check_choice("saliency", self.saliency, SALIENCY_VARIANTS)
        _check_choice("recovery", self.recovery, RECOVERY_VARIANTS)
        self.window = _check_positive_int("window", self.window)
        c = self.recovery_constant
        # Recovered entries are stored and attended in the model dtype: fp16's largest finite value bounds them.
        if not isinstance(c, numbers.Real) or isinstance(c, bool) or not 0.0 <= float(c) <= MAX_RECOVERY_CONSTANT:
            raise ValueError(f"recovery_constant must be a number in [0, {MAX_RECOVERY_CONSTANT:g}], got {c!r}")
        self.recovery_constant = float(c)
        self.seed = _check_positive_int("seed", self.seed, minimum=0)


@dataclass
class ThinKConfig:
    """ThinK: structured key-channel pruning, the same channels for every token of a head (spec §5).

    Attributes:
        channel_prune_ratio: λ in [0, 1); ``floor(λ·D)`` channels are pruned for every token of a KV head.
        window: number of last prompt queries in the observation window.
    """

    channel_prune_ratio: float = 0.5
    window: int = 32
    method: str = field(default="think", init=False)

    def __post_init__(self) -> None:
        self.channel_prune_ratio = _check_ratio("channel_prune_ratio (key ratio λ)", self.channel_prune_ratio)
        self.window = _check_positive_int("window", self.window)


@dataclass
class EvictionConfig:
    """Token eviction applied before channel pruning (spec §4).

    Exactly one of ``token_budget`` (tokens kept per layer and head, window included) and ``token_ratio``
    (fraction of prompt tokens *removed*) is set.

    Attributes:
        method: ``"snapkv"``, ``"pyramidkv"`` or ``"streamingllm"``.
        token_budget: tokens kept, the observation window included; must exceed ``window`` (``sink_tokens``
            for streamingllm).
        token_ratio: fraction in [0, 1) of prompt tokens evicted (keep ``(1 - ratio)·S``).
        window: SnapKV / PyramidKV observation window (64).
        kernel_size: SnapKV pooling kernel (5, odd).
        pyramid_beta: PyramidKV's β (20).
        sink_tokens: StreamingLLM's attention sinks (4).
        pyramid_fallback_compat: reproduce the published PyramidKV code, which keeps 90% of all tokens
            whenever ``min_num < window``. Off by default: it is a bug, offered only for comparisons.
    """

    method: Literal["snapkv", "pyramidkv", "streamingllm"] = "snapkv"
    token_budget: int | None = None
    token_ratio: float | None = None
    window: int = 64
    kernel_size: int = 5
    pyramid_beta: int = 20
    sink_tokens: int = 4
    pyramid_fallback_compat: bool = False

    def __post_init__(self) -> None:
        _check_choice("eviction method", self.method, EVICTION_METHODS)
        if (self.token_budget is None) == (self.token_ratio is None):
            raise ValueError("exactly one of token_budget and token_ratio must be set")
        self.window = _check_positive_int("window", self.window)
        self.kernel_size = _check_positive_int("kernel_size", self.kernel_size)
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        self.pyramid_beta = _check_positive_int("pyramid_beta", self.pyramid_beta)
        self.sink_tokens = _check_positive_int("sink_tokens", self.sink_tokens, minimum=0)
        if self.token_budget is not None:
            self.token_budget = _check_positive_int("token_budget", self.token_budget)
            reserved = self.sink_tokens if self.method == "streamingllm" else self.window
            if self.token_budget <= reserved:
                what = "sink_tokens" if self.method == "streamingllm" else "window"
                raise ValueError(
                    f"token_budget must be greater than {what} ({reserved}) for {self.method}, got {self.token_budget}"
                )
        if self.token_ratio is not None:
            self.token_ratio = _check_ratio("token_ratio", self.token_ratio)


@dataclass
class PressConfig:
    """A whole press: optional eviction, then optional channel pruning.

    Attributes:
        eviction: token eviction, or None.
        channels: key-channel pruning (SparK or ThinK), or None.
        backend: ``"auto"`` (the GPU kernels where they apply on CUDA, PyTorch otherwise), ``"torch"`` or
            ``"triton"``.
    """

    eviction: EvictionConfig | None = None
    channels: SparKConfig | ThinKConfig | None = None
    backend: Literal["auto", "torch", "triton"] = "auto"

    def __post_init__(self) -> None:
        _check_choice("backend", self.backend, BACKENDS)
        if self.channels is not None and not isinstance(self.channels, (SparKConfig, ThinKConfig)):
            raise TypeError(f"channels must be a SparKConfig or ThinKConfig, got {type(self.channels).__name__}")
        if self.eviction is not None and not isinstance(self.eviction, EvictionConfig):
            raise TypeError(f"eviction must be an EvictionConfig, got {type(self.eviction).__name__}")
        # Forcing the GPU kernels where they have no path would only fail mid-generation: refuse it here.
        prunes = self.channels is not None and self.channels.channel_prune_ratio > 0  # λ = 0 stores dense keys
        if self.backend == "triton" and prunes and isinstance(self.channels, ThinKConfig):
            raise ValueError("backend='triton' has no kernel for ThinK layouts; use backend 'auto' (GPU kernels where "
                             "they apply, PyTorch elsewhere) or 'torch'")
        if self.backend == "triton" and prunes and isinstance(self.channels, SparKConfig) and \
                self.channels.recovery in ("gaussian", "exponential"):
            raise ValueError(f"backend='triton' supports the recoveries mean, mean_linear, zero and constant, not "
                             f"{self.channels.recovery!r} (an ablation on the PyTorch path); use backend 'auto' or "
                             "'torch'")

    @property
    def name(self) -> str:
        parts = [p.method for p in (self.eviction, self.channels) if p is not None]
        return "+".join(parts) if parts else "full"

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}


PRESS_NAMES = ("full", *EVICTION_METHODS, *CHANNEL_METHODS)


def parse_press(
    spec: str,
    *,
    key_ratio: float = 0.5,
    budget: int | None = None,
    token_ratio: float | None = None,
    recovery: str = "mean",
    saliency: str = "code",
    recovery_constant: float = 0.01,
    backend: str = "auto",
) -> PressConfig:
    """Build a press from the CLI grammar: ``full``, ``snapkv``, ``spark``, ``snapkv+spark``, ``pyramidkv+think``...

    At most one eviction method and one channel method, joined by ``+`` (eviction first).
    An eviction method needs ``budget`` or ``token_ratio``; if neither is given, ``budget=512`` is used.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"press must be a non-empty string such as 'snapkv+spark'; got {spec!r}")
    # Options a press does not use are still checked: a bad value is a mistake even where it changes nothing.
    _check_ratio("channel_prune_ratio (key ratio λ)", key_ratio)
    if budget is not None:
        _check_positive_int("budget (token_budget)", budget)
    if token_ratio is not None:
        _check_ratio("token_ratio", token_ratio)
    # Names are case-insensitive here as the press's are ("SnapKV+SparK"); the dataclasses take them exactly.
    recovery, saliency, backend = (x.strip().lower() if isinstance(x, str) else x
                                   for x in (recovery, saliency, backend))
    parts = [p.strip().lower() for p in spec.split("+")]
    for p in parts:
        if p not in PRESS_NAMES:
            raise ValueError(f"unknown press component {p!r} in press {spec!r}; allowed: {', '.join(PRESS_NAMES)}")
    if "full" in parts:
        if len(parts) > 1:
            raise ValueError(f"press 'full' cannot be combined with other methods (got {spec!r})")
        return PressConfig(backend=backend)
    evictions = [p for p in parts if p in EVICTION_METHODS]
    channels = [p for p in parts if p in CHANNEL_METHODS]
    if len(evictions) > 1 or len(channels) > 1 or len(parts) != len(set(parts)):
        raise ValueError(f"press {spec!r} must hold at most one eviction method and one channel method")
    if evictions and parts[0] not in EVICTION_METHODS:
        raise ValueError(f"in press {spec!r} the eviction method comes first (e.g. 'snapkv+spark')")
    eviction = None
    if evictions:
        if budget is None and token_ratio is None:
            budget = 512
        eviction = EvictionConfig(method=evictions[0], token_budget=budget, token_ratio=token_ratio)
    channel_cfg: SparKConfig | ThinKConfig | None = None
    if channels == ["spark"]:
        channel_cfg = SparKConfig(
            channel_prune_ratio=key_ratio, recovery=recovery, saliency=saliency, recovery_constant=recovery_constant
        )
    elif channels == ["think"]:
        channel_cfg = ThinKConfig(channel_prune_ratio=key_ratio)
    return PressConfig(eviction=eviction, channels=channel_cfg, backend=backend)
