"""Run an evaluation: build samples, generate once per sample for all presses, append, score, resume.

Output folder (``cfg.out``):
- ``config.json``: the resolved configuration, the press list and the environment;
- ``predictions.jsonl``: one row per (task, sample id, press label), appended as soon as it exists; a rerun
  skips rows already there, so an interrupted run continues where it stopped (and adding presses or samples
  only generates the new ones);
- ``metrics.json``: scores per task and press (``100 x mean``), averages, per-length (and per-depth) scores and
  the mean KV-cache bytes per press;
- NIAH also writes ``results.json`` (one record per length, depth and press) and ``heatmap.png``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import platform
import re
import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from sparkv._files import exclusive, write_atomic
from sparkv.config import PressConfig
from sparkv.eval.config import EvalConfig, EvalError, press_meta
from sparkv.eval.metrics import longbench_length_bucket, score_prediction
from sparkv.eval.tasks.common import PromptFormat, Sample, num_label

log = logging.getLogger(__name__)

MEMORY_FIELDS = ("dense_kv_bytes", "compressed_kv_bytes", "allocated_kv_bytes", "nominal_kv_bytes")
RULER_DEFAULT_LIMIT = 100
NIAH_DEFAULT_LENGTHS = [1000, 2000, 4000]
NIAH_DEFAULT_DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


# ----------------------------------------------------------------------------------------------------------------
# Generation backends


@dataclass
class Generation:
    """What the runner keeps from one generation."""

    answer: str
    context_tokens: int | None = None
    memory: dict[str, Any] | None = None


class Backend(Protocol):
    tokenizer: Any
    max_context: int | None
    prefix_in_reply: bool

    def generate_many(self, sample: Sample, presses: list[PressConfig]) -> list[Generation]: ...


def _memory_dict(memory: Any) -> dict[str, Any] | None:
    if memory is None:
        return None
    if isinstance(memory, dict):
        raw = memory
    elif is_dataclass(memory):
        raw = asdict(memory)
    else:
        raw = {k: getattr(memory, k) for k in dir(memory) if not k.startswith("_") and not callable(getattr(memory, k))}
    out = {}
    for k, v in raw.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        elif hasattr(v, "item"):
            out[k] = v.item()
    return out


class SparkvBackend:
    """Generation through ``sparkv.load_model`` / ``sparkv.generate_many`` (imported lazily).

    sparkv prefills and compresses the whole prompt, so the split between context and question is only textual;
    the runner hands the whole user text over as ``context`` (with an empty ``question``) so that the benchmarks'
    own templates reach the model byte for byte (sparkv would otherwise join the two with a blank line).
    """

    def __init__(self, model: str, dtype: str | None = None, device: str | None = None,
                 max_context: int | None = None):
        import sparkv
        from sparkv.models import LoadOptionError, load_model_naming_the_option

        try:
            self._many = sparkv.generate_many
            self._one = sparkv.generate
        except (AttributeError, ImportError) as exc:
            raise EvalError(f"this sparkv cannot generate ({exc}); is sparkv.integration installed?") from exc
        try:  # a bad option as an EvalError naming it: the CLI prints those without a traceback
            self.model, self.tokenizer = load_model_naming_the_option(model, dtype, device)
        except LoadOptionError as exc:
            named = f" {model!r}" if exc.option == "model" else ""
            raise EvalError(f"{exc.option} (--{exc.option}){named}: {exc}") from exc
        self.max_context = getattr(self.model.config, "max_position_embeddings", None)
        params = inspect.signature(self._many).parameters
        self._accepts_chat = "chat_template" in params
        self.prefix_in_reply = "answer_prefix" in params
        # --max-context: the harness checks it; generate must not refuse what it allowed
        self._max_context = max_context if "max_context" in params else None

    def _kwargs(self, sample: Sample) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {"max_new_tokens": sample.max_new_tokens}
        if sample.stop_at_newline:
            kwargs.update(stop_at_newline_kwargs(self.model, self.tokenizer))
        if self._max_context is not None:
            kwargs["max_context"] = self._max_context
        if self._accepts_chat:
            kwargs["chat_template"] = sample.chat_template
        text = sample.context + sample.question
        if self.prefix_in_reply:
            kwargs["answer_prefix"] = sample.answer_prefix
        else:
            text += sample.answer_prefix
        return text, kwargs

    def generate_many(self, sample: Sample, presses: list[PressConfig]) -> list[Generation]:
        text, kwargs = self._kwargs(sample)
        results = self._many(self.model, self.tokenizer, text, "", presses, **kwargs)
        return [
            Generation(
                answer=str(r.answer),
                context_tokens=getattr(r, "context_tokens", None),
                memory=_memory_dict(getattr(r, "memory", None)),
            )
            for r in results
        ]


def stop_at_newline_kwargs(model, tokenizer) -> dict[str, Any]:
    """``generate`` options of LongBench's samsum rule: the newline token ends generation like EOS, and
    ``min_new_tokens=1`` keeps both from being the first token (``pred.py``: ``eos_token_id=[eos, newline]``,
    ``min_length=context_length + 1``)."""
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else list(eos) if isinstance(eos, (list, tuple)) else [int(eos)]
    newline = tokenizer.encode("\n", add_special_tokens=False)[-1]
    return {"eos_token_id": [*eos, newline], "min_new_tokens": 1}


def make_backend(cfg: EvalConfig) -> Backend:
    """The real backend (tests replace this function)."""
    return SparkvBackend(cfg.model, dtype=cfg.dtype, device=cfg.device, max_context=cfg.max_context)


# ----------------------------------------------------------------------------------------------------------------
# Prediction store


class PredictionStore:
    """``predictions.jsonl``: rows keyed by (task, sample id, press label); appended and flushed one by one."""

    def __init__(self, path: Path, repair: bool = True):
        self.path = path
        self.rows: dict[tuple[str, str, str], dict[str, Any]] = {}
        if not path.exists():
            return
        # Under the lock that appends take (other shards may be writing). A run killed mid-write leaves a torn last
        # line: `repair` ends it, so that the next row starts on a line of its own (readers pass False).
        with open(path, "rb+" if repair else "rb") as f, exclusive(f):
            data = f.read()
            if repair and data and not data.endswith(b"\n"):
                f.write(b"\n")
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key = (row["task"], str(row["id"]), row["label"])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d: unreadable row skipped (it will be generated again)", path, number)
                continue
            self.rows[key] = row

    def __contains__(self, key: tuple[str, str, str]) -> bool:
        return key in self.rows

    def append(self, row: dict[str, Any]) -> None:
        key = (row["task"], str(row["id"]), row["label"])
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        # One write under an exclusive lock: shards of a run (--shard) append to the same file.
        with open(self.path, "ab") as f, exclusive(f):
            f.write(line)
            f.flush()
        self.rows[key] = row


# ----------------------------------------------------------------------------------------------------------------
# Planning


def haystack_digest(text: str | None) -> str | None:
    """SHA-256 of the haystack text a RULER / NIAH run reads (None for LongBench): resuming compares contents, so an
    edited file is noticed and the same file under another path is not."""
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _check_config_compatible(cfg: EvalConfig, out: Path, digest: str | None,
                             data_digest: dict[str, str] | None = None) -> None:
    path = out / "config.json"
    if not path.exists():
        return
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return
    old = record.get("config", {})
    current = cfg.to_dict()
    by_content = record.get("haystack_sha256") is not None and digest is not None
    data_by_content = isinstance(record.get("data_sha256"), dict) and data_digest is not None
    changed = [k for k in EvalConfig.DATA_FIELDS
               if k in old and old[k] != current.get(k) and not (k == "haystack" and by_content)
               and not (k == "data_dir" and data_by_content)]
    if by_content and record["haystack_sha256"] != digest:
        changed.append("haystack_sha256")
        old, current = {**old, "haystack_sha256": "text as before"}, {**current, "haystack_sha256": "edited text"}
    edited = sorted(t for t in set(record["data_sha256"]) & set(data_digest)
                    if record["data_sha256"][t] != data_digest[t]) if data_by_content else []
    if edited:
        changed.append("data_sha256")
        old, current = {**old, "data_sha256": "files as before"}, {**current, "data_sha256": f"edited: {edited}"}
    if changed and (out / "predictions.jsonl").exists():
        detail = "; ".join(f"{k}: {old[k]!r} -> {current.get(k)!r}" for k in changed)
        raise EvalError(
            f"{out} holds predictions made with another configuration ({detail}); "
            "use another --out, or --overwrite to discard them"
        )


def _validate_before_model(cfg: EvalConfig) -> str | dict[str, tuple[list, str]] | None:
    """Every check that needs no model: task names, data files, haystack files. Returns the data, read once here for
    the whole run: the haystack text (RULER, NIAH), or per LongBench task its checked records and the file's SHA-256
    (resuming compares contents, as for haystacks, so a corrected file is noticed, the same folder spelled another
    way is not, and adding tasks to a run folder stays allowed)."""
    from sparkv.data import read_haystack

    if cfg.benchmark == "ruler":
        from sparkv.eval.tasks.ruler import RULER_TASKS

        for t in cfg.tasks or []:
            if t not in RULER_TASKS:
                raise EvalError(f"unknown RULER task {t!r}; known: {', '.join(RULER_TASKS)}")
    elif cfg.benchmark == "longbench":
        from sparkv.eval.tasks.longbench import LONGBENCH_E_TASKS, LONGBENCH_TASKS, load_task

        if not cfg.data_dir:
            raise EvalError("LongBench needs --data-dir (the folder holding <task>.jsonl files)")
        if cfg.max_length is not None and cfg.max_length < 2:
            raise EvalError(f"--max-length must be >= 2 (half of it is kept at each end), got {cfg.max_length}")
        try:  # every record checked here, before the model loads
            return {t: load_task(cfg.data_dir, t, cfg.longbench_e, cfg.limit)
                    for t in cfg.tasks or (LONGBENCH_E_TASKS if cfg.longbench_e else LONGBENCH_TASKS)}
        except (ValueError, FileNotFoundError) as exc:
            raise EvalError(str(exc)) from None
    if cfg.benchmark in ("ruler", "niah"):
        try:
            text = read_haystack(cfg.haystack)
            if cfg.benchmark == "niah":  # the needle, question and answer too, before the model loads
                from sparkv.eval.tasks import niah

                given = {k: getattr(cfg, k) for k in ("needle", "question", "answer") if getattr(cfg, k) is not None}
                test = {"needle": niah.DEFAULT_NEEDLE, "question": niah.DEFAULT_QUESTION,
                        "answer": niah.DEFAULT_ANSWER, **given}
                niah.check_needle_test(haystack_text=text, **test)
            return text
        except (ValueError, FileNotFoundError) as exc:
            raise EvalError(str(exc)) from None
    return None


def plan_samples(cfg: EvalConfig, fmt: PromptFormat, max_context: int | None,
                 data: str | dict | None = None) -> list[tuple[str, str, Callable[[], Sample]]]:
    """``(task, sample_id, make)`` for the whole run; ``data``: what :func:`_validate_before_model` read, if it did
    (the RULER / NIAH haystack text, or the LongBench records)."""
    haystack = data if isinstance(data, str) else None
    longbench = data if isinstance(data, dict) else {}
    from sparkv.data import read_haystack

    plan: list[tuple[str, str, Callable[[], Sample]]] = []
    if cfg.benchmark == "ruler":
        from sparkv.eval.tasks.ruler import RULER_TASK_NAMES, generate_ruler

        haystack = haystack if haystack is not None else read_haystack(cfg.haystack)
        lengths = cfg.lengths or [4096]
        num = cfg.limit or RULER_DEFAULT_LIMIT
        for task in cfg.tasks or RULER_TASK_NAMES:
            for length in lengths:
                for sid, make in generate_ruler(task, length, num, fmt, haystack, seed=cfg.seed,
                                                chat_template=cfg.chat_template, max_new_tokens=cfg.max_new_tokens):
                    plan.append((task, sid, make))
    elif cfg.benchmark == "niah":
        from sparkv.eval.tasks import niah

        haystack = haystack if haystack is not None else read_haystack(cfg.haystack)
        kwargs = {k: getattr(cfg, k) for k in ("needle", "question", "answer") if getattr(cfg, k) is not None}
        for sid, make in niah.generate_niah(
            fmt, haystack, cfg.lengths or NIAH_DEFAULT_LENGTHS, cfg.depths or NIAH_DEFAULT_DEPTHS,
            max_new_tokens=cfg.max_new_tokens or 32, chat_template=cfg.chat_template, **kwargs,
        ):
            plan.append(("niah", sid, make))
        if cfg.limit:
            plan = plan[: cfg.limit]
    else:
        from sparkv.eval.tasks.longbench import (
            DATASET2MAXLEN,
            LONGBENCH_E_TASKS,
            LONGBENCH_TASKS,
            NO_CHAT_TEMPLATE,
            generate_longbench,
        )

        for task in cfg.tasks or (LONGBENCH_E_TASKS if cfg.longbench_e else LONGBENCH_TASKS):
            gen_len = cfg.max_new_tokens or DATASET2MAXLEN[task]
            max_length = cfg.max_length
            # Room for the chat template (when the task uses it) and a few tokens of decode/re-encode drift.
            chat = task not in NO_CHAT_TEMPLATE
            overhead = fmt.count("a", "", "", chat) - fmt.count_text("a") + 4
            if max_length is None:
                if max_context is None:
                    raise EvalError("LongBench needs --max-length when the model does not state its context size")
                max_length = max_context - gen_len - overhead
            elif max_context is not None and max_length + gen_len + overhead > max_context:
                raise EvalError(
                    f"--max-length {max_length} + {gen_len} generated tokens + {overhead} of prompt template ({task}) "
                    f"exceed the model's context of {max_context} tokens; lower --max-length to at most "
                    f"{max_context - gen_len - overhead} (or raise --max-context if the model can take it)"
                )
            records = longbench[task][0] if task in longbench else None
            for sid, make in generate_longbench(task, cfg.data_dir, fmt, max_length, limit=cfg.limit,
                                                longbench_e=cfg.longbench_e, max_new_tokens=cfg.max_new_tokens,
                                                records=records):
                plan.append((task, sid, make))
    return _interleave_tasks(plan)


def _interleave_tasks(plan: list[tuple[str, str, Callable[[], Sample]]]) -> list[tuple[str, str, Callable[[], Sample]]]:
    """Round robin over tasks (first sample of every task, then the second...), so that a run stopped early, or
    one shard of several, covers every task with about the same number of samples."""
    by_task: dict[str, list[tuple[str, str, Callable[[], Sample]]]] = defaultdict(list)
    for item in plan:
        by_task[item[0]].append(item)
    queues = list(by_task.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _check_lengths(cfg: EvalConfig, max_context: int | None) -> None:
    if max_context is None or cfg.benchmark == "longbench":
        return
    lengths = cfg.lengths or (NIAH_DEFAULT_LENGTHS if cfg.benchmark == "niah" else [4096])
    too_long = [L for L in lengths if L > max_context]
    if too_long:
        source = "--max-context" if cfg.max_context else "max_position_embeddings"
        raise EvalError(
            f"length(s) {too_long} exceed the model's context of {max_context} tokens ({source}); "
            "lower --lengths, or pass --max-context if the model can really take more"
        )


def _check_extreme_samples(todo: list[tuple[str, str, Callable[[], Sample]]], fmt: PromptFormat,
                           max_context: int | None) -> dict[tuple[str, str], Sample]:
    """Before anything runs, build the shortest and the longest sample of every task still to run: a length too
    short for a task's template fails here, not after the other lengths ran; and the longest, question and
    generation included, must fit ``max_context`` (a length just under it can still overflow with the question and
    the answer). Returns the samples built, for the run to reuse."""
    extremes: dict[tuple[str, str], tuple[int, str, Callable[[], Sample]]] = {}
    for task, sid, make in todo:
        match = re.match(r"L?(\d+)-", sid)  # NIAH "L{length}-D{depth}", RULER "{length}-{index}"
        if match is None:
            return {}  # LongBench: records are checked when read; their lengths are the documents'
        length = int(match[1])
        for end, better in (("short", length < extremes.get((task, "short"), (length + 1,))[0]),
                            ("long", length > extremes.get((task, "long"), (length - 1,))[0])):
            if better:
                extremes[(task, end)] = (length, sid, make)
    built: dict[tuple[str, str], Sample] = {}
    for (task, end), (_, sid, make) in extremes.items():
        if (task, sid) not in built:
            try:
                built[(task, sid)] = make()
            except ValueError as exc:
                raise EvalError(str(exc)) from exc
        sample = built[(task, sid)]
        if end == "short" or max_context is None:
            continue
        prompt_tokens = sample.meta.get("prompt_tokens") or fmt.count_sample(sample)
        if prompt_tokens + sample.max_new_tokens > max_context:
            raise EvalError(
                f"{task}/{sid}: {prompt_tokens} prompt tokens + {sample.max_new_tokens} generated exceed the model's "
                f"context of {max_context} tokens (question and answer come on top of the length); lower --lengths, "
                "or pass --max-context if the model can really take more"
            )
    return built


def _environment() -> dict[str, Any]:
    """Versions of the packages a run depends on (installed distributions; None where one is missing)."""
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, Any] = {"python": platform.python_version()}
    for name in ("sparkv", "torch", "transformers", "triton"):
        try:
            env[name] = version(name)
        except PackageNotFoundError:
            env[name] = None
    return env


# ----------------------------------------------------------------------------------------------------------------
# Running


def run_eval(cfg: EvalConfig, backend: Backend | None = None, overwrite: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run (or resume) ``cfg``; returns the metrics written to ``metrics.json``."""
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    presses = cfg.press_configs()
    for _, _, press in presses:
        if press.channels is not None and hasattr(press.channels, "seed"):
            press.channels.seed = cfg.seed
    shard, shards = cfg.shard_slice()
    if overwrite and shards > 1:
        raise EvalError("--overwrite with --shard would let each shard delete the others' rows; "
                        "empty the output folder once before starting the shards")
    if overwrite:
        for name in ("predictions.jsonl", "metrics.json", "results.json"):
            (out / name).unlink(missing_ok=True)
    data = _validate_before_model(cfg)
    digest = haystack_digest(data) if isinstance(data, str) else None
    data_digest = {t: sha for t, (_, sha) in data.items()} if isinstance(data, dict) else None
    if not overwrite:
        _check_config_compatible(cfg, out, digest, data_digest)

    backend = backend or make_backend(cfg)
    max_context = cfg.max_context or backend.max_context
    if cfg.max_context and backend.max_context and cfg.max_context > backend.max_context:
        log.warning("--max-context %d exceeds the model's max_position_embeddings %d", cfg.max_context,
                    backend.max_context)
    _check_lengths(cfg, max_context)
    fmt = PromptFormat(backend.tokenizer, prefix_in_reply=backend.prefix_in_reply)
    try:
        plan = plan_samples(cfg, fmt, max_context, data)
    except ValueError as exc:  # a generator refusing its arguments (a length too short for a task, a blank needle)
        raise EvalError(str(exc)) from exc

    config_record = {
        "config": {k: v for k, v in cfg.to_dict().items() if k != "shard"},  # shards share one folder
        "presses": [{**press_meta(label, spec, press), "config": press.to_dict()} for label, spec, press in presses],
        "max_context": max_context,
        "haystack_sha256": digest,
        "data_sha256": data_digest,
        "answer_prefix": "assistant reply" if backend.prefix_in_reply else "end of the user turn",
        "environment": _environment(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    write_atomic(out / "config.json", json.dumps(config_record, indent=2, default=str))

    store = PredictionStore(out / "predictions.jsonl")
    todo = [(t, sid, make) for i, (t, sid, make) in enumerate(plan)
            if i % shards == shard and any((t, sid, label) not in store for label, _, _ in presses)]
    prebuilt = _check_extreme_samples(todo, fmt, max_context)
    mine = len(range(shard, len(plan), shards))
    if len(todo) < mine:
        log.info("resuming: %d of %d samples already done", mine - len(todo), mine)
    warned = False
    desc = f"{cfg.benchmark} ({len(presses)} presses" + (f", shard {shard}/{shards})" if shards > 1 else ")")
    bar = tqdm(todo, desc=desc, unit="sample", disable=not progress)
    for task, sid, make in bar:
        try:
            sample = prebuilt.pop((task, sid), None) or make()
        except ValueError as exc:  # e.g. a length too short for a task's template
            raise EvalError(str(exc)) from exc
        missing = [(label, spec, press) for label, spec, press in presses if (task, sid, label) not in store]
        prompt_tokens = sample.meta.get("prompt_tokens") or fmt.count_sample(sample)
        if max_context is not None and prompt_tokens + sample.max_new_tokens > max_context:
            raise EvalError(
                f"{task}/{sid}: {prompt_tokens} prompt tokens + {sample.max_new_tokens} generated exceed the "
                f"model's context of {max_context} tokens; shorten the input or pass --max-context"
            )
        bar.set_postfix_str(f"{task} {sid}")
        start = time.perf_counter()
        try:
            results = backend.generate_many(sample, [p for _, _, p in missing])
        except ValueError as exc:  # e.g. a prompt shorter than a press's observation window
            raise EvalError(f"{task}/{sid}: {exc}") from exc
        seconds = time.perf_counter() - start
        if len(results) != len(missing):
            raise RuntimeError(f"generate_many returned {len(results)} results for {len(missing)} presses")
        for (label, spec, press), result in zip(missing, results):
            row = {
                "task": task,
                "id": sid,
                **press_meta(label, spec, press),
                "prediction": result.answer,
                "answers": sample.answers,
                "metric": sample.metric,
                "score": score_prediction(sample.metric, result.answer, sample.answers,
                                          all_classes=sample.meta.get("all_classes")),
                "prompt_tokens": prompt_tokens,
                "context_tokens": result.context_tokens,
                "memory": result.memory,
                "seconds": round(seconds, 3),
                **{k: v for k, v in sample.meta.items() if k != "prompt_tokens"},
            }
            store.append(row)
            if result.context_tokens is not None and result.context_tokens != prompt_tokens and not warned:
                warned = True
                log.warning("%s/%s: the model received %s prompt tokens, the harness counted %d (lengths are off)",
                            task, sid, result.context_tokens, prompt_tokens)

    if shards > 1:  # the other shards' rows too, as far as they got
        store = PredictionStore(out / "predictions.jsonl")
    keys = {(t, sid) for t, sid, _ in plan}
    labels = [label for label, _, _ in presses]
    rows = [r for (t, sid, label), r in store.rows.items() if (t, sid) in keys and label in labels]
    metrics = compute_metrics(rows, cfg.benchmark, labels)
    metrics["rows"] = {"present": len(rows), "planned": len(keys) * len(labels)}
    # The samples these metrics count (the folder may hold more, from an earlier run with a larger --limit): the
    # report pairs presses on exactly these.
    metrics["samples"] = sorted([t, sid] for t, sid in keys)
    if len(rows) < len(keys) * len(labels):
        log.warning("%s: metrics cover %d of %d rows (other shards still running, or rerun to finish)",
                    out, len(rows), len(keys) * len(labels))
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    if cfg.benchmark == "niah":
        from sparkv.eval.report import plot_niah_heatmap

        records = niah_records(rows)
        write_atomic(out / "results.json", json.dumps(records, indent=2))
        plot_niah_heatmap(records, out / "heatmap.png", labels)
    return metrics


def niah_records(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("length", "depth", "press", "label", "method", "key_ratio", "budget", "token_ratio", "recovery", "score",
            "prediction", "actual_depth", "context_tokens_exact", "prompt_tokens", "context_tokens", "memory")
    records = [{k: r.get(k) for k in keep} for r in rows]
    records.sort(key=lambda r: (r["label"], r["length"], r["depth"]))
    return records


# ----------------------------------------------------------------------------------------------------------------
# Metrics


def _mean100(xs: list[float]) -> float:
    return round(100 * statistics.fmean(xs), 2) if xs else float("nan")


def compute_metrics(rows: list[dict[str, Any]], benchmark: str, labels: list[str] | None = None) -> dict[str, Any]:
    """Aggregate prediction rows (scores recomputed from the predictions, so metric fixes apply to old runs)."""
    per_task: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_length: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_depth: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    per_bucket: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    memory: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    meta: dict[str, dict[str, Any]] = {}
    for r in rows:
        label = r["label"]
        score = score_prediction(r["metric"], r["prediction"], r["answers"], all_classes=r.get("all_classes"))
        per_task[r["task"]][label].append(score)
        meta[label] = {k: r.get(k) for k in ("press", "method", "key_ratio", "budget", "token_ratio", "recovery")}
        if benchmark in ("ruler", "niah") and r.get("length") is not None:
            per_length[str(r["length"])][label].append(score)
        if benchmark == "niah" and r.get("depth") is not None:
            per_depth[num_label(r["depth"])][label].append(score)
        if benchmark == "longbench" and isinstance(r.get("length"), (int, float)):
            per_bucket[r["task"]][longbench_length_bucket(int(r["length"]))][label].append(score)
        mem = r.get("memory") or {}
        dense = mem.get("dense_kv_bytes")
        for name in MEMORY_FIELDS:
            value = mem.get(name)
            if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                memory[label][name].append(float(value))
                if name != "dense_kv_bytes" and dense:
                    memory[label][name.replace("_kv_bytes", "_over_dense")].append(float(value) / float(dense))
    order = labels or sorted(meta)
    order = [label for label in order if label in meta]
    scores = {t: {label: _mean100(v[label]) for label in order if label in v} for t, v in sorted(per_task.items())}
    counts = {t: {label: len(v[label]) for label in order if label in v} for t, v in sorted(per_task.items())}
    average = {}
    for label in order:
        values = [scores[t][label] for t in scores if label in scores[t]]
        average[label] = round(statistics.fmean(values), 2) if values else float("nan")
    out: dict[str, Any] = {
        "benchmark": benchmark,
        "presses": {label: meta[label] for label in order},
        "scores": scores,
        "counts": counts,
        "average": average,
        "memory": {label: {k: statistics.fmean(v) for k, v in memory[label].items()}
                   for label in order if label in memory},
    }

    def by(group: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
        def key(k: str) -> tuple:
            try:
                return (0, float(k))
            except ValueError:
                return (1, k)
        return {k: {label: _mean100(group[k][label]) for label in order if label in group[k]}
                for k in sorted(group, key=key)}

    if per_length:
        out["by_length"] = by(per_length)
    if per_depth:
        out["by_depth"] = by(per_depth)
    if per_bucket:
        out["by_length_bucket"] = {t: by(b) for t, b in sorted(per_bucket.items())}
    return out
