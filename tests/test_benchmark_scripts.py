"""The GPU benchmark scripts fail clearly without a GPU instead of timing the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    """The benchmark scripts' folder importable (they import ``common`` as a top-level module), for this test only."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_ab_decode_refuses_without_cuda():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ab_decode.py")], capture_output=True, text=True,
                         check=False,
                         timeout=120, env=env, cwd=ROOT)
    assert res.returncode != 0
    assert "needs CUDA" in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_generate_benchmark_refuses_without_cuda():
    res = subprocess.run([sys.executable, "-m", "benchmarks.generate"], capture_output=True, text=True, check=False,
                         timeout=120, cwd=ROOT)
    assert res.returncode != 0 and "needs CUDA" in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("script", ["decode_host_overhead.py", "cuda_decode_sweep.py", "combine_passes_ab.py",
                                    "stream_ceiling.py", "decode_host_profile.py", "cuda_source_ab.py",
                                    "graph_decode.py", "multi_token_steps.py"])
def test_gpu_only_benchmarks_refuse_without_cuda(script, tmp_path):
    """They time a GPU against itself: without one they exit with a message and write nothing."""
    out = tmp_path / "out.json"
    extra = [] if script == "decode_host_profile.py" else ["--out", str(out)]  # it prints, writes no file
    if script == "cuda_source_ab.py":
        extra += ["--base-dir", str(tmp_path)]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *extra], capture_output=True,
                         text=True, check=False, timeout=120, cwd=ROOT)
    assert res.returncode != 0 and "needs a CUDA device" in res.stderr
    assert not out.exists()


def test_source_ab_launch_overrides_are_checked(tmp_path):
    """``--tree-launch`` takes the working tree's launch keys with integer values, ``--key-ratio`` one of the shapes'
    λ; anything else is refused by name, before any GPU work."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_source_ab.py"), "--base-dir", str(tmp_path),
                          "--tree-launch", "stages=1,threads=128"], capture_output=True, text=True, check=False,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "--tree-launch" in res.stderr and "'threads=128'" in res.stderr
    assert "'stages'" in res.stderr  # the allowed keys are named
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cuda_source_ab.py"), "--base-dir", str(tmp_path),
                          "--key-ratio", "0.3"], capture_output=True, text=True, check=False, timeout=120, cwd=ROOT)
    assert res.returncode == 2 and "--key-ratio" in res.stderr and "0.5, 0.8" in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU dry run")
def test_decode_table_dry_run_is_tiny_and_never_overwrites_gpu_results(tmp_path):
    """Under TRITON_INTERPRET=1 the table runs at tiny shapes, checked against the reference, into dry_run/."""
    committed = ROOT / "benchmarks" / "results" / "decode_attention_h200.json"
    before = committed.read_bytes()
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "decode_attention.py"), "--head-dims", "64",
                          "--batches", "1"], capture_output=True, text=True, check=False, timeout=600, env=env,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    assert committed.read_bytes() == before
    out = ROOT / "benchmarks" / "results" / "dry_run" / "decode_attention_cpu.json"
    rows = json.loads(out.read_text())["rows"]
    assert [r["context"] for r in rows] == [256] * 3 and all(r["rel_err"] < 1e-2 for r in rows)
    # Both L2 flushes are timed for every row.
    assert all(r["flush"] == "read" and r["us"] > 0 and r["us_zero_flush"] > 0 for r in rows)


def test_decode_table_models_default_to_the_issues_table_and_refuse_unknown_names(benchmarks_on_path):
    """``--models``: the issue's two head layouts by default; the opt-in ones in the table's order; an unknown or
    empty list is an argparse error naming the known layouts."""
    import argparse

    import decode_attention as table

    assert list(table.DEFAULT_MODELS) == ["llama-3.1-8b", "smollm2"]
    names = table.parse_models("gemma-2-9b, qwen2.5-0.5b,llama-3.1-8b")
    picked = table.selected_models(argparse.Namespace(models=names))
    assert [m["model"] for m in picked] == ["llama-3.1-8b", "qwen2.5-0.5b", "gemma-2-9b"]
    assert [(m["q_heads"], m["kv_heads"], m["head_dim"]) for m in picked] == [(32, 8, 128), (14, 2, 64), (16, 8, 256)]
    for bad in ("llama-3-8b", "", "smollm2,gemma"):
        with pytest.raises(argparse.ArgumentTypeError, match="takes names from llama-3.1-8b, smollm2, "):
            table.parse_models(bad)


def test_bench_us_refuses_an_unknown_flush(benchmarks_on_path):
    from common import bench_us
    with pytest.raises(ValueError, match=r"flush must be one of \('zero', 'read'\)"):
        bench_us(lambda: None, flush="memset")


def test_flush_l2_writes_or_reads_the_buffer(benchmarks_on_path):
    """``zero`` goes through the driver's clear_cache (dirty lines), ``read`` reads the buffer (clean lines)."""
    from common import flush_l2
    calls = []

    class Driver:
        def clear_cache(self, buffer):
            calls.append(("clear_cache", buffer))

    class Buffer:
        def max(self):
            calls.append(("max", self))

    buf = Buffer()
    flush_l2(Driver(), buf, "zero")
    flush_l2(Driver(), buf, "read")
    assert calls == [("clear_cache", buf), ("max", buf)]
    with pytest.raises(ValueError, match="flush must be one of"):
        flush_l2(Driver(), buf, "memset")


def test_code_digest_follows_the_sources(tmp_path, benchmarks_on_path):
    """Results files name the code that made them by a digest of its sources: any change of a source changes it."""
    from common import code_digest
    (tmp_path / "sparkv" / "kernels").mkdir(parents=True)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "sparkv" / "a.py").write_text("x = 1\n")
    (tmp_path / "sparkv" / "kernels" / "k.cu").write_text("// kernel\n")
    (tmp_path / "benchmarks" / "b.py").write_text("y = 2\n")
    first = code_digest(tmp_path)
    assert first == code_digest(tmp_path) and len(first) == 64
    (tmp_path / "sparkv" / "kernels" / "k.cu").write_text("// kernel, changed\n")
    assert code_digest(tmp_path) != first
    (tmp_path / "notes.txt").write_text("not a source")
    second = code_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("still not a source")
    assert code_digest(tmp_path) == second


@pytest.mark.parametrize("mechanism", ["cp.async", "bulk", "warp tiles"])
def test_stream_ceiling_kernels_compile_for_sm90(mechanism, benchmarks_on_path):
    """The streaming-ceiling kernels build (NVRTC from the pip wheel) for every configuration the script times."""
    from sparkv.kernels.decode_attn import cuda

    lib = cuda.pip_nvrtc()
    if lib is None:
        pytest.skip("the nvidia-cuda-nvrtc wheel is not installed")
    import stream_ceiling

    if mechanism == "warp tiles":
        sources = [stream_ceiling.kernel_source(tile, stages, 16, wpb, chunked)
                   for tile, stages, wpb, _, chunked in stream_ceiling.WARP_CONFIGS]
    else:
        sources = [stream_ceiling.kernel_source(tile, stages, chunk)
                   for mech, tile, stages, chunk in stream_ceiling.CONFIGS if mech == mechanism]
    assert sources
    for source in sources:
        cubin = cuda.nvrtc_compile(source, stream_ceiling.kernel_name(mechanism), "sm_90", lib)
        assert cubin[:4] == b"\x7fELF"


@pytest.mark.parametrize("script,results", [
    ("decode_attention.py", ["decode_attention_h200.json"]),
    ("graph_decode.py", ["graph_decode_128k_b1_generate_h200.json", "graph_decode_32k_b4_h200.json"]),
    ("multi_token_steps.py", ["multi_token_steps_h200_s39.json"]),
    ("multi_token_steps.py", ["multi_token_steps_h200_s40.json"]),
])
def test_plots_redraw_from_committed_results_without_a_gpu(script, results, tmp_path):
    """``--replot``: the figure comes from the committed JSON alone (no GPU, nothing re-measured)."""
    png = tmp_path / "plot.png"
    paths = [str(ROOT / "benchmarks" / "results" / r) for r in results]
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--replot", *paths, "--png", str(png)],
                         capture_output=True, text=True, check=False, timeout=300, cwd=ROOT,
                         env={**os.environ, "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_a_gpu_run_without_matplotlib_keeps_its_json_and_says_how_to_plot(monkeypatch, capsys, tmp_path):
    """The lent GPU machine may lack matplotlib: the run ends normally and names the --replot command."""
    from benchmarks.common import plot_after_run

    drawn = []
    plot_after_run(lambda result, png: drawn.append(png), {"rows": []}, tmp_path / "t.png", tmp_path / "t.json")
    assert drawn == [tmp_path / "t.png"]  # with matplotlib: drawn
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    plot_after_run(lambda result, png: drawn.append(png), {"rows": []}, tmp_path / "t.png", tmp_path / "t.json")
    assert drawn == [tmp_path / "t.png"] and f"--replot {tmp_path / 't.json'}" in capsys.readouterr().out


def test_folder_ab_checks_its_folders_then_refuses_without_cuda(tmp_path):
    """benchmarks/folder_ab.py (the experiments' kernel-folder A/Bs): a NAME:FOLDER pair that is malformed, repeated
    or missing a kernel file is refused by name on any machine; without a GPU it then exits before writing."""
    base = tmp_path / "base"
    base.mkdir()
    for f in ("cuda.py", "spark_walk.cu"):
        (base / f).write_text((ROOT / "sparkv" / "kernels" / "decode_attn" / f).read_text())
    out = tmp_path / "out.json"

    def run(*specs):
        code = "import sys, folder_ab; folder_ab.run(sys.argv[1:], (), ())"
        return subprocess.run([sys.executable, "-c", code, str(out), *specs], capture_output=True, text=True,
                              check=False, timeout=120, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'benchmarks'}"})

    res = run()
    assert res.returncode != 0 and "usage: OUT.json NAME:FOLDER" in res.stderr
    res = run(f"main{base}")
    assert res.returncode != 0 and "NAME:FOLDER" in res.stderr and f"main{base}" in res.stderr
    res = run(f"main:{base}", f"main:{base}")
    assert res.returncode != 0 and "distinct" in res.stderr
    res = run(f"main:{base}", f"v1:{tmp_path}")
    assert res.returncode != 0 and "cuda.py" in res.stderr and str(tmp_path) in res.stderr
    if not torch.cuda.is_available():
        res = run(f"main:{base}", f"v1:{base}")
        assert res.returncode != 0 and "needs a CUDA device" in res.stderr
    assert not out.exists()
