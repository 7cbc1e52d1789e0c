"""Tables and plots of finished runs: ``sparkv eval report RUN_DIR...``.

- one markdown table (task x press) per (benchmark, model), merging the runs given (a later run's cell wins);
- a memory table (mean KV-cache bytes relative to the dense cache) per press;
- paired differences against a reference press (``full`` when present) from the per-sample predictions: mean
  difference of the task-averaged score with a 95 % bootstrap interval (samples resampled within each task, the
  same samples for both presses), so a reader can see which differences the sample size supports;
- ``accuracy_vs_key_ratio.png`` when the runs hold one method at several key ratios λ (one line per method,
  budget and recovery; presses without channel pruning as horizontal references);
- NIAH heatmaps (one panel per press) are written by the runner itself (:func:`plot_niah_heatmap`).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import torch


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` and ``metrics.json`` of a run folder; ``FileNotFoundError`` when either is missing."""
    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"run folder {str(d)!r} does not exist")
    metrics_path = d / "metrics.json"
    pred_path = d / "predictions.jsonl"
    config_path = d / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    rows = []
    if pred_path.is_file():
        from sparkv.eval.runner import PredictionStore  # tolerant of a torn last line (a run still writing)

        rows = list(PredictionStore(pred_path, repair=False).rows.values())
    partial = False
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    # metrics.json written by the first of several shards (--shard) counts fewer rows than were planned.
    counted = (metrics or {}).get("rows") or {}
    if rows and (metrics is None or counted.get("present", 0) < counted.get("planned", 0)):
        # An interrupted or still-running run: aggregate what it predicted so far (the report says so).
        from sparkv.eval.runner import compute_metrics

        labels = [p["label"] for p in config.get("presses", []) if "label" in p] or None
        benchmark = config.get("config", {}).get("benchmark", rows[0].get("benchmark", "?"))
        metrics = compute_metrics(rows, benchmark, labels)
        planned = counted.get("planned")
        partial = planned is None or sum(1 for r in rows if labels is None or r.get("label") in labels) < planned
    elif metrics is None:
        raise FileNotFoundError(f"{str(d)!r} has neither metrics.json nor predictions.jsonl (is it a `sparkv eval` "
                                "run folder?)")
    counted_samples = None if partial or metrics.get("samples") is None else {tuple(x) for x in metrics["samples"]}
    predictions = [{k: r.get(k) for k in ("task", "id", "label", "score", "length")} for r in rows
                   if isinstance(r.get("score"), (int, float)) and not math.isnan(r["score"])
                   and (counted_samples is None or (r.get("task"), r.get("id")) in counted_samples)]
    return {"dir": str(d), "metrics": metrics, "config": config, "predictions": predictions, "partial": partial}


BOOTSTRAP_RESAMPLES = 2000


def paired_differences(predictions: list[dict[str, Any]], reference: str, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Per press: task-averaged score minus the reference's on the same samples, with a 95 % bootstrap interval.

    Only samples scored under both presses count. The bootstrap resamples samples within each task (the average is a
    mean of task means) and applies the same draw to both presses (a paired test), ``resamples`` times.

    Returns:
        One dict per other press: ``label``, ``tasks``, ``samples`` (paired samples), ``per_task`` (min samples
        per task), ``score``, ``reference_score``, ``diff``, ``low``, ``high`` (in the score's unit).
    """
    table: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for row in predictions:
        table[(row["task"], str(row["id"]))][row["label"]] = 100.0 * float(row["score"])
    labels = sorted({row["label"] for row in predictions} - {reference})
    gen = torch.Generator().manual_seed(seed)
    out = []
    for label in labels:
        pairs: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for (task, _), scores in sorted(table.items()):
            if label in scores and reference in scores:
                pairs[task].append((scores[label], scores[reference]))
        if not pairs:
            continue
        tasks = sorted(pairs)
        diffs = {t: [a - b for a, b in pairs[t]] for t in tasks}

        def macro(values: dict[str, list[float]]) -> float:
            return sum(sum(v) / len(v) for v in values.values()) / len(values)

        # Same draw for the two presses (resampling the differences); tasks are resampled independently.
        boot = torch.zeros(resamples, dtype=torch.float64)
        for t in tasks:
            d = torch.tensor(diffs[t], dtype=torch.float64)
            idx = torch.randint(len(d), (resamples, len(d)), generator=gen)
            boot += d[idx].mean(1)
        boot = (boot / len(tasks)).sort().values.tolist()
        out.append({
            "label": label, "tasks": len(tasks), "samples": sum(len(v) for v in pairs.values()),
            "per_task": min(len(v) for v in pairs.values()),
            "differ": sum(a != b for v in pairs.values() for a, b in v),
            "score": macro({t: [a for a, _ in pairs[t]] for t in tasks}),
            "reference_score": macro({t: [b for _, b in pairs[t]] for t in tasks}),
            "diff": macro(diffs), "low": boot[int(0.025 * resamples)], "high": boot[int(0.975 * resamples) - 1],
        })
    return out


def _fmt(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.2f}" if isinstance(x, float) else str(x)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _label_order(labels: Iterable[str], meta: dict[str, dict[str, Any]]) -> list[str]:
    """Full first, then eviction only, then by method, key ratio and label."""
    def key(label: str) -> tuple:
        m = meta.get(label, {})
        method = m.get("method") or label
        return (method != "full", "+" in method or method in ("spark", "think"), method,
                m.get("budget") or 0, m.get("key_ratio") or 0.0, label)
    return sorted(set(labels), key=key)


# Settings that decide what a sample id holds, per suite: runs merged into one table must agree on them, or a
# task's cells (and the paired differences) would compare different samples that share ids. The data itself (the
# haystack, LongBench's files) is compared by content where both runs recorded it, else by path.
SAMPLE_FIELDS = {
    "ruler": ("seed", "max_new_tokens", "chat_template"),
    "niah": ("max_new_tokens", "chat_template", "needle", "question", "answer"),
    "longbench": ("max_new_tokens", "max_length", "longbench_e"),
}


def _sample_settings(run: dict[str, Any], benchmark: str) -> dict[str, Any]:
    record = run["config"]
    cfg = record.get("config", {})
    out = {k: cfg.get(k) for k in SAMPLE_FIELDS.get(benchmark, ())}
    if benchmark == "longbench" and cfg.get("max_length") is None:
        out["max_context"] = record.get("max_context")  # the truncation length follows from it
    return out


def _same_data(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why two runs' data differ (None when the same or unknown): by content when both recorded it."""
    for key, path_key in (("haystack_sha256", "haystack"), ("data_sha256", "data_dir")):
        x, y = a["config"].get(key), b["config"].get(key)
        if x is not None and y is not None:
            if isinstance(x, dict) and isinstance(y, dict):  # LongBench: per task file, the tasks both read
                edited = sorted(t for t in set(x) & set(y) if x[t] != y[t])
                if edited:
                    return f"{path_key}: task files {edited} differ"
            elif x != y:
                return f"{path_key}: different contents"
        elif x is None and y is None:
            px, py = a["config"].get("config", {}).get(path_key), b["config"].get("config", {}).get(path_key)
            if px is not None and py is not None and px != py:
                return f"{path_key}: {px!r} vs {py!r}"
    return None


def merge_runs(runs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Group runs by (benchmark, model); merge their scores, averages and memory per press label. Runs of one group
    must have made the same samples (:data:`SAMPLE_FIELDS`, the haystack's content): else ValueError."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for run in runs:
        m = run["metrics"]
        cfg = run["config"].get("config", {})
        key = (m.get("benchmark", cfg.get("benchmark", "?")), str(cfg.get("model", "?")))
        g = groups.setdefault(key, {"scores": defaultdict(dict), "memory": {}, "presses": {}, "dirs": [],
                                    "by_length": defaultdict(dict), "first": run})
        first = g["first"]
        mine, theirs = _sample_settings(run, key[0]), _sample_settings(first, key[0])
        differ = [f"{k}: {theirs[k]!r} vs {mine[k]!r}" for k in mine
                  if theirs.get(k) != mine[k] and theirs.get(k) is not None and mine[k] is not None]
        data = _same_data(first, run)
        if differ or data:
            detail = "; ".join(differ + ([data] if data else []))
            raise ValueError(f"runs {first['dir']} and {run['dir']} made different samples under the same ids "
                             f"({detail}); report them separately")
        g["dirs"].append(run["dir"])
        for task, cells in m.get("scores", {}).items():
            g["scores"][task].update(cells)
        g["memory"].update(m.get("memory", {}))
        g["presses"].update(m.get("presses", {}))
        for length, cells in m.get("by_length", {}).items():
            g["by_length"][length].update(cells)
    for g in groups.values():
        labels = list(g["presses"])
        g["average"] = {}
        for label in labels:
            values = [cells[label] for cells in g["scores"].values()
                      if label in cells and not (isinstance(cells[label], float) and math.isnan(cells[label]))]
            g["average"][label] = sum(values) / len(values) if values else float("nan")
    return groups


def render_markdown(runs: list[dict[str, Any]], reference: str | None = None) -> str:
    """The report text: one section per (benchmark, model); paired differences against ``reference`` (default:
    ``full`` when present, else the first press)."""
    out: list[str] = []
    for (benchmark, model), g in merge_runs(runs).items():
        labels = _label_order(g["presses"], g["presses"])
        out.append(f"## {benchmark} — model `{model}`\n")
        partial = [run["dir"] for run in runs if run.get("partial") and run["dir"] in g["dirs"]]
        out.append("Runs: " + ", ".join(f"`{d}`" for d in g["dirs"]) + "\n")
        if partial:
            out.append("**Unfinished:** " + ", ".join(f"`{d}`" for d in partial) + " (scores aggregate the "
                       "predictions written so far).\n")
        rows = [[task] + [_fmt(cells.get(label)) for label in labels] for task, cells in sorted(g["scores"].items())]
        rows.append(["**average**"] + [f"**{_fmt(g['average'].get(label))}**" for label in labels])
        out.append(_table(["task"] + [f"`{label}`" for label in labels], rows) + "\n")
        if len(g["by_length"]) > 1:
            rows = [[length] + [_fmt(cells.get(label)) for label in labels]
                    for length, cells in sorted(g["by_length"].items(), key=lambda kv: float(kv[0]))]
            out.append("By length (mean over tasks and samples):\n")
            out.append(_table(["length"] + [f"`{label}`" for label in labels], rows) + "\n")
        mem_labels = [label for label in labels if g["memory"].get(label)]
        if mem_labels:
            rows = []
            for label in mem_labels:
                mem = g["memory"][label]
                dense = mem.get("dense_kv_bytes")
                rows.append([f"`{label}`", _fmt(dense / 2**20 if dense else None)]
                            + [_fmt(mem.get(k)) for k in ("nominal_over_dense", "compressed_over_dense",
                                                           "allocated_over_dense")])
            out.append("KV cache (mean over samples; ratios to the dense cache of the same prompt and the press's own "
                       "generated tokens; exact and allocated include the decode tail's reserved slots):\n")
            out.append(_table(["press", "dense MiB", "nominal", "exact layout", "allocated"], rows) + "\n")
        predictions = [p for run in runs if run["dir"] in g["dirs"] for p in run.get("predictions", [])]
        ref = reference or ("full" if "full" in g["presses"] else (labels[0] if labels else None))
        if reference and reference not in g["presses"]:
            raise ValueError(f"reference press {reference!r} is not in the runs; labels: {', '.join(labels)}")
        diffs = paired_differences(predictions, ref) if ref and predictions else []
        if diffs:
            order = {label: i for i, label in enumerate(labels)}
            rows = [[f"`{d['label']}`", _fmt(d["score"]), _fmt(d["reference_score"]), _fmt(d["diff"]),
                     f"[{_fmt(d['low'])}, {_fmt(d['high'])}]", str(d["differ"]),
                     f"{d['samples']} ({d['tasks']} tasks, ≥ {d['per_task']} each)"]
                    for d in sorted(diffs, key=lambda d: order.get(d["label"], len(order)))]
            out.append(f"Paired difference to `{ref}` on the same samples (task-averaged score; 95 % bootstrap "
                       f"interval, {BOOTSTRAP_RESAMPLES} resamples within tasks). An interval that contains 0 is "
                       "not a measured difference; with few samples that differ, the interval is optimistic:\n")
            out.append(_table(["press", "score", f"`{ref}` on the same samples", "difference", "95 % interval",
                               "samples that differ", "paired samples"], rows) + "\n")
    return "\n".join(out)


def key_ratio_points(runs: list[dict[str, Any]]) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """Average score vs λ: ``{series: [(λ, score)...]}`` and ``{reference label: score}``."""
    series: dict[str, dict[float, float]] = defaultdict(dict)
    references: dict[str, float] = {}
    for (benchmark, model), g in merge_runs(runs).items():
        prefix = f"{benchmark}/{model}: " if len(merge_runs(runs)) > 1 else ""
        for label, meta in g["presses"].items():
            score = g["average"].get(label)
            if score is None or (isinstance(score, float) and math.isnan(score)):
                continue
            if meta.get("key_ratio") is None:
                references[prefix + label] = score
                continue
            method = meta.get("method") or label
            size = meta.get("budget") if meta.get("budget") is not None else (
                f"r{meta['token_ratio']:g}" if meta.get("token_ratio") is not None else None)
            name = method + (f" @{size}" if size is not None else "")
            if meta.get("recovery") not in (None, "mean"):
                name += f" ({meta['recovery']})"
            series[prefix + name][float(meta["key_ratio"])] = score
    return {k: sorted(v.items()) for k, v in series.items()}, references


def plot_key_ratio(runs: list[dict[str, Any]], path: str | Path) -> bool:
    """Write the accuracy-vs-λ plot when some series has two λ or more; returns whether it was written."""
    series, references = key_ratio_points(runs)
    if not any(len(points) >= 2 for points in series.values()):
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, points in sorted(series.items()):
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=name)
    for i, (name, score) in enumerate(sorted(references.items())):
        ax.axhline(score, linestyle="--", linewidth=1, color=f"C{(len(series) + i) % 10}", label=name)
    ax.set_xlabel("key channel pruning ratio λ")
    ax.set_ylabel("average score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_niah_heatmap(records: list[dict[str, Any]], path: str | Path, labels: list[str] | None = None) -> None:
    """Needle-in-a-haystack heatmap: depth (rows) x length (columns), one panel per press label."""
    plt = _plt()
    import numpy as np

    present = {r["label"] for r in records}
    labels = [label for label in (labels or sorted(present)) if label in present]
    lengths = sorted({r["length"] for r in records})
    depths = sorted({r["depth"] for r in records})
    n = max(len(labels), 1)
    fig, axes = plt.subplots(1, n, figsize=(max(3.0, 1.2 + 0.6 * len(lengths)) * n + 1.2, 0.45 * len(depths) + 2.4),
                             squeeze=False, constrained_layout=True)
    image = None
    for i, (ax, label) in enumerate(zip(axes[0], labels)):
        grid = np.full((len(depths), len(lengths)), np.nan)
        for r in records:
            if r["label"] == label:
                grid[depths.index(r["depth"]), lengths.index(r["length"])] = r["score"]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        mean = float(np.nanmean(grid)) if np.isfinite(grid).any() else float("nan")
        ax.set_title(f"{label}\nmean {mean:.2f}", fontsize=9)
        ax.set_xticks(range(len(lengths)), [str(x) for x in lengths], rotation=45, fontsize=8)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=8)
        ax.set_xlabel("context length (tokens)", fontsize=8)
        if i == 0:
            ax.set_ylabel("needle depth (0 = start)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="score")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(run_dirs: list[str | Path], out_dir: str | Path | None = None,
                 reference: str | None = None) -> tuple[str, list[Path]]:
    """Render the report of ``run_dirs`` into ``out_dir`` (default: the first run); returns (markdown, files).

    ``reference``: the press label paired differences are taken against (default ``full`` when present)."""
    if not run_dirs:
        raise ValueError("give at least one run folder")
    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir) if out_dir is not None else Path(run_dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    text = "# sparkv evaluation report\n\n" + render_markdown(runs, reference)
    files = []
    plot = out / "accuracy_vs_key_ratio.png"
    if plot_key_ratio(runs, plot):
        text += f"\n![accuracy vs key ratio]({plot.name})\n"
        files.append(plot)
    report = out / "report.md"
    report.write_text(text, encoding="utf-8")
    files.insert(0, report)
    return text, files
