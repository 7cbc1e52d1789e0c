"""Shared benchmark helpers: timing, environment record, correctness gate, markdown tables, JSON output.

Protocol (../shared/spec/benchmarks.md): median over CUDA-event-timed calls after warm-up, the L2 flushed before
every timed call (``triton.testing.do_bench``'s loop; optionally the call replayed from a CUDA graph), random data,
every config checked against the reference in the same run before it is timed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
# ``cpu`` for a dry run of a script's code paths under TRITON_INTERPRET=1 (tiny shapes; numbers meaningless).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def script_parser(doc: str, out: Path | None = None) -> argparse.ArgumentParser:
    """A benchmark script's parser: its docstring as help and, with ``out``, ``--out`` (the JSON file) defaulting
    to it."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is not None:
        p.add_argument("--out", type=Path, default=out)
    return p


def parse_gpu_args(parser: argparse.ArgumentParser, script: str) -> argparse.Namespace:
    """Parse the arguments of a GPU-only script, then exit with a message where there is no CUDA device (after
    parsing, so that ``--help`` works anywhere); nothing is written then."""
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit(f"{script} needs a CUDA device")
    return args


def wall_clock_us(fn, warmup: int = 5, rep: int = 50) -> float:
    """Median wall-clock time of ``fn()`` in microseconds (CPU code, or GPU-less dry runs)."""
    import statistics
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rep):
        t = time.perf_counter()
        fn()
        times.append(1e6 * (time.perf_counter() - t))
    return statistics.median(times)


FLUSHES = ("zero", "read")


def flush_l2(driver, buffer, flush: str) -> None:
    """Evict L2 by writing (``"zero"``: Triton's ``driver.clear_cache``) or reading (``"read"``) ``buffer``."""
    if flush == "zero":
        driver.clear_cache(buffer)
    elif flush == "read":
        buffer.max()
    else:
        raise ValueError(f"flush must be one of {FLUSHES}, got {flush!r}")


def bench_us(fn, warmup: int = 25, rep: int = 100, graph: bool = True, flush: str = "zero") -> float:
    """Median GPU time of ``fn()`` in microseconds, L2 flushed with a 256 MB buffer before every timed call.

    ``flush="zero"``: the buffer is zeroed (``triton.testing.do_bench``'s flush). That leaves L2 full of *dirty*
    lines, whose write-back to DRAM then competes with the timed kernel's reads: on the H200 it added 0-14 µs to a
    kernel's time, mostly 2-10 µs, whatever the kernel (both columns of ``results/decode_attention_h200.json``).
    ``flush="read"``: the buffer is read (a max reduction), so L2 holds clean lines of it; the timed operands are
    just as cold, without the write-back. That is what a decode step meets in a model (the layers before attention
    read weights, they write almost nothing).
    ``graph=True`` captures ``fn`` in a CUDA graph and times its replays with CUDA events, so what is measured is
    the kernels' time, not Python / launch overhead (a small decode step otherwise measures the host: our
    launcher's two Triton launches cost ~0.1-0.2 ms of CPU in this VM). Otherwise the same loop as
    ``triton.testing.do_bench`` (median). Without CUDA (dry runs under ``TRITON_INTERPRET=1``) a wall-clock median.
    """
    if flush not in FLUSHES:
        raise ValueError(f"flush must be one of {FLUSHES}, got {flush!r}")
    if not torch.cuda.is_available():
        return wall_clock_us(fn, warmup=0, rep=3)
    import statistics

    import triton

    run = fn
    fn()  # compile / autotune outside the capture
    torch.cuda.synchronize()
    if graph:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                fn()
                fn()
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn()
            run = g.replay
        except RuntimeError as e:  # a backend that refuses capture is timed eagerly
            print(f"note: CUDA graph capture failed ({e}); timing eagerly", flush=True)
            torch.cuda.synchronize()
    driver = triton.runtime.driver.active
    cache = driver.get_empty_cache_for_benchmark()

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        flush_l2(driver, cache, flush)
        run()
    end.record()
    torch.cuda.synchronize()
    estimate_ms = max(start.elapsed_time(end) / 5, 1e-3)
    for _ in range(max(1, int(warmup / estimate_ms))):
        run()
    n = max(5, int(rep / estimate_ms))
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        flush_l2(driver, cache, flush)
        starts[i].record()
        run()
        ends[i].record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖out − ref‖ / ‖ref‖`` in float64; NaN anywhere counts as failure (inf)."""
    if torch.isnan(out).any():
        return float("inf")
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm()).item()


def code_digest(root: Path | None = None) -> str:
    """SHA-256 over the library and benchmark sources (``sparkv/**/*.py``, ``*.cu``, ``benchmarks/*.py``: paths and
    contents, sorted): which code made a results file, even where no git history travels with it (the lent GPU
    machine gets a copy of the working tree). Recompute it on a checkout to find the commit."""
    import hashlib

    root = root or Path(__file__).resolve().parents[1]
    files = sorted([*root.glob("sparkv/**/*.py"), *root.glob("sparkv/**/*.cu"), *root.glob("benchmarks/*.py")])
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def environment() -> dict:
    """Device, date, versions and the code's digest for the results file."""
    import triton

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "code_sha256": code_digest(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": triton.__version__,
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["device"] = props.name
        env["sms"] = props.multi_processor_count
        env["memory_gib"] = round(props.total_memory / 2**30, 1)
        env["l2_cache_mib"] = round(props.L2_cache_size / 2**20, 1)
        env["cuda"] = torch.version.cuda
        env["cudnn"] = torch.backends.cudnn.version()
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    else:
        env["device"] = "cpu"
    return env


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """``columns``: (key, header, format spec). Missing values print as ``-``."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("-" if v is None else format(v, fmt) if fmt else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_out(name: str) -> Path:
    """A script's default JSON: ``results/<name>_h200.json`` on CUDA. A dry run without CUDA writes
    ``results/dry_run/<name>_cpu.json`` (git-ignored) instead, never over a committed GPU result."""
    return RESULTS / f"{name}_h200.json" if DEVICE == "cuda" else RESULTS / "dry_run" / f"{name}_cpu.json"


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")


def fmt_ctx(tokens: int) -> str:
    return f"{tokens // 1024}K" if tokens % 1024 == 0 else str(tokens)


def plot_after_run(plot, result, png: Path, json_path: Path) -> None:
    """``plot(result, png)`` at the end of a GPU run; where matplotlib is missing (a lent GPU machine may lack it) say
    how to draw the figure elsewhere instead of failing a run whose JSON is already written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"matplotlib is not installed here, so no plot: draw it elsewhere with --replot {json_path}")
        return
    plot(result, png)
