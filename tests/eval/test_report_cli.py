"""`sparkv eval` through typer's CliRunner (scripted backend, no model) and report rendering."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparkv.eval.cli import eval_app
from sparkv.eval.report import key_ratio_points, render_markdown, write_report

runner = CliRunner()


@pytest.fixture
def no_model(monkeypatch, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    backends = []

    def make(cfg):
        backends.append(ScriptedBackend(bpe_tokenizer))
        return backends[-1]

    monkeypatch.setattr("sparkv.eval.runner.make_backend", make)
    return backends


def invoke(*args):
    return runner.invoke(eval_app, [str(a) for a in args])


def test_niah_command_writes_results_and_heatmap(tmp_path, no_model):
    out = tmp_path / "niah"
    r = invoke("niah", "--needle", "The code word is zebra-42.", "--question", "What is the code word?",
               "--answer", "zebra-42", "--lengths", "300,600", "--depths", "0.25,0.5,0.75", "--press", "full",
               "--press", "snapkv+spark", "--key-ratio", "0.5", "--budget", "96", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    records = json.loads((out / "results.json").read_text())
    assert len(records) == 2 * 3 * 2
    for rec in records:
        assert {"length", "depth", "press", "key_ratio", "score", "prediction"} <= set(rec)
    full = [x for x in records if x["press"] == "full"]
    assert all(x["score"] == 1.0 for x in full) and all(x["key_ratio"] is None for x in full)
    spark = [x for x in records if x["press"] == "snapkv+spark"]
    assert {x["key_ratio"] for x in spark} == {0.5} and {x["label"] for x in spark} == {"snapkv@96+spark@0.5"}
    assert (out / "heatmap.png").stat().st_size > 1000
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_depth"]) == {"0.25", "0.5", "0.75"}
    # resumed: nothing left to generate
    r = invoke("niah", "--needle", "The code word is zebra-42.", "--question", "What is the code word?",
               "--answer", "zebra-42", "--lengths", "300,600", "--depths", "0.25,0.5,0.75", "--press",
               "full,snapkv+spark", "--key-ratio", "0.5", "--budget", "96", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert no_model[-1].calls == []


def test_ruler_command_with_yaml(tmp_path, no_model):
    y = tmp_path / "c.yaml"
    y.write_text("tasks: [niah_single_2]\nlengths: [900]\nlimit: 2\npress: [full, snapkv]\nbudget: 96\n")
    r = invoke("ruler", "--config", y, "--limit", "1", "--no-chat-template", "--out", tmp_path / "r", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert cfg["limit"] == 1 and cfg["tasks"] == ["niah_single_2"] and cfg["budgets"] == [96]
    assert cfg["chat_template"] is False and cfg["presses"] == ["full", "snapkv"]
    assert "niah_single_2" in r.output and "average" in r.output


@pytest.mark.parametrize("args,message", [
    (["ruler", "--tasks", "niah_single_9"], "unknown RULER task"),
    (["ruler", "--press", "snapkv+foo"], "unknown press component"),
    (["ruler", "--key-ratio", "abc"], "key_ratio must be numbers"),
    (["ruler", "--haystack", "/nonexistent/file.txt"], "does not exist"),
    (["niah", "--depths", "50"], "depths must be fractions"),
    (["longbench", "--data-dir", "/nonexistent/lb"], "does not exist"),
    (["longbench"], "needs --data-dir"),
    (["ruler", "--lengths", "9000"], "exceed the model's context of 8192"),
])
def test_cli_errors(tmp_path, no_model, args, message):
    r = invoke(*args, "--out", tmp_path / "x", "--quiet")
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())


@pytest.mark.parametrize("benchmark", ["niah", "ruler"])
@pytest.mark.parametrize("option,value,message", [
    ("--dtype", "fp64", "dtype (--dtype): dtype must be one of"),
    ("--device", "nodevice", "device (--device):"),
    ("--model", "/nonexistent/model-folder", "model (--model) '/nonexistent/model-folder':"),
])
def test_bad_model_options_are_usage_errors(tmp_path, benchmark, option, value, message):
    """The real backend (no model loads: each of these fails before it) reports the option by name, no traceback."""
    r = invoke(benchmark, "--lengths", "500", "--limit", "1", option, value, "--out", tmp_path / "x", "--quiet")
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


def test_longbench_unknown_task(tmp_path, no_model):
    (tmp_path / "qasper.jsonl").write_text('{"input": "q", "context": "c", "answers": ["a"], "_id": "1"}\n')
    r = invoke("longbench", "--data-dir", tmp_path, "--tasks", "qasper,lsht", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "unknown LongBench task 'lsht'" in " ".join(r.output.split())


def _fake_run(path, benchmark, scores, presses, memory=None, model="smollm2"):
    path.mkdir(parents=True)
    labels = list(presses)
    average = {label: sum(s[label] for s in scores.values()) / len(scores) for label in labels}
    (path / "metrics.json").write_text(json.dumps({"benchmark": benchmark, "presses": presses, "scores": scores,
                                                   "average": average, "memory": memory or {}}))
    (path / "config.json").write_text(json.dumps({"config": {"benchmark": benchmark, "model": model}}))
    return path


def _press(method, key_ratio=None, budget=None, recovery=None):
    return {"press": method, "method": method, "key_ratio": key_ratio, "budget": budget, "token_ratio": None,
            "recovery": recovery}


def test_report_tables_and_key_ratio_plot(tmp_path):
    a = _fake_run(tmp_path / "a", "ruler", {"vt": {"full": 90.0, "snapkv@128+spark@0.5": 80.0},
                                              "cwe": {"full": 70.0, "snapkv@128+spark@0.5": 60.0}},
                  {"full": _press("full"), "snapkv@128+spark@0.5": _press("snapkv+spark", 0.5, 128, "mean")},
                  memory={"snapkv@128+spark@0.5": {"dense_kv_bytes": 2**20, "compressed_over_dense": 0.1,
                                                    "nominal_over_dense": 0.05, "allocated_over_dense": 0.12}})
    b = _fake_run(tmp_path / "b", "ruler", {"vt": {"snapkv@128+spark@0.8": 50.0, "snapkv@128+think@0.8": 10.0},
                                              "cwe": {"snapkv@128+spark@0.8": 40.0, "snapkv@128+think@0.8": 0.0}},
                  {"snapkv@128+spark@0.8": _press("snapkv+spark", 0.8, 128, "mean"),
                   "snapkv@128+think@0.8": _press("snapkv+think", 0.8, 128)})
    md = render_markdown([json.loads(json.dumps({"dir": str(a), "metrics": json.loads((a / "metrics.json").read_text()),
                                                  "config": json.loads((a / "config.json").read_text())}))])
    assert "| task | `full` | `snapkv@128+spark@0.5` |" in md
    assert "| vt | 90.00 | 80.00 |" in md and "| **average** | **80.00** | **70.00** |" in md
    assert "| `snapkv@128+spark@0.5` | 1.00 | 0.05 | 0.10 | 0.12 |" in md
    text, files = write_report([a, b], tmp_path / "rep")
    assert "`snapkv@128+think@0.8`" in text and "| vt | 90.00 |" in text  # merged table of both runs
    assert [f.name for f in files] == ["report.md", "accuracy_vs_key_ratio.png"]
    assert files[1].stat().st_size > 1000
    from sparkv.eval.report import load_run
    series, refs = key_ratio_points([load_run(a), load_run(b)])
    assert series["snapkv+spark @128"] == [(0.5, 70.0), (0.8, 45.0)] and refs == {"full": 80.0}
    # CLI
    r = invoke("report", a, b, "--out", tmp_path / "rep2")
    assert r.exit_code == 0 and "## ruler" in r.output and (tmp_path / "rep2" / "report.md").exists()
    r = invoke("report", tmp_path / "missing")
    assert r.exit_code == 2 and "does not exist" in r.output


def test_report_without_lambda_sweep_has_no_plot(tmp_path):
    a = _fake_run(tmp_path / "a", "niah", {"niah": {"full": 100.0}}, {"full": _press("full")})
    text, files = write_report([a])
    assert [f.name for f in files] == ["report.md"] and "## niah" in text


def _pred(task, i, label, score):
    return {"task": task, "id": f"s{i}", "label": label, "score": score, "length": 100}


def test_paired_differences_interval_covers_the_effect_and_tightens_with_samples():
    from sparkv.eval.report import paired_differences

    def rows(n):
        out = []
        for task in ("a", "b"):
            for i in range(n):
                out.append(_pred(task, i, "full", 1.0))
                out.append(_pred(task, i, "same", 1.0))
                out.append(_pred(task, i, "worse", 0.0 if i % 2 == 0 else 1.0))  # half the samples fail
        out.append(_pred("a", 999, "worse", 0.0))  # unpaired: ignored
        return out

    small = {d["label"]: d for d in paired_differences(rows(8), "full", seed=1)}
    large = {d["label"]: d for d in paired_differences(rows(200), "full", seed=1)}
    assert small["same"]["diff"] == 0 and small["same"]["differ"] == 0
    assert small["same"]["low"] == small["same"]["high"] == 0
    for res in (small, large):
        w = res["worse"]
        assert w["diff"] == pytest.approx(-50.0) and w["samples"] == w["differ"] * 2
        assert w["low"] < -50.0 < w["high"] < 0
    assert (large["worse"]["high"] - large["worse"]["low"]) < (small["worse"]["high"] - small["worse"]["low"]) / 3
    assert small["worse"]["samples"] == 16 and small["worse"]["per_task"] == 8


def test_report_renders_paired_table_from_predictions(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, "ruler", {"t": {"full": 100.0, "spark@0.8": 50.0}},
              {"full": _press("full"), "spark@0.8": _press("spark", 0.8)})
    with open(run / "predictions.jsonl", "w") as f:
        for i in range(6):
            f.write(json.dumps(_pred("t", i, "full", 1.0)) + "\n")
            f.write(json.dumps(_pred("t", i, "spark@0.8", float(i % 2))) + "\n")
    text, _ = write_report([run])
    assert "Paired difference to `full`" in text
    line = next(x for x in text.splitlines() if x.startswith("| `spark@0.8`") and "paired" not in x and "(1 tasks" in x)
    assert "-50.00" in line and "| 3 |" in line


def test_paired_table_uses_only_the_samples_the_metrics_count(tmp_path):
    """A folder may hold predictions beyond the run's --limit (an earlier, larger run): the paired block must use the
    samples metrics.json counts, like the task table."""
    run = tmp_path / "run"
    _fake_run(run, "ruler", {"t": {"full": 100.0, "spark@0.8": 0.0}},
              {"full": _press("full"), "spark@0.8": _press("spark", 0.8)})
    with open(run / "predictions.jsonl", "w") as f:
        for i in range(6):  # samples 4 and 5 come from a larger earlier run, where spark scored 1
            f.write(json.dumps(_pred("t", i, "full", 1.0)) + "\n")
            f.write(json.dumps(_pred("t", i, "spark@0.8", float(i >= 4))) + "\n")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["samples"] = [["t", _pred("t", i, "full", 1.0)["id"]] for i in range(4)]
    (run / "metrics.json").write_text(json.dumps(metrics))
    text, _ = write_report([run])
    line = next(x for x in text.splitlines() if x.startswith("| `spark@0.8`") and "(1 tasks" in x)
    assert "-100.00" in line and "| 4 |" in line


def test_report_on_unfinished_run_and_reference_option(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    presses = [{"label": "full", **_press("full")}, {"label": "spark@0.8", **_press("spark", 0.8)},
               {"label": "spark@0.8/zero", **_press("spark", 0.8, recovery="zero")}]
    (run / "config.json").write_text(json.dumps({"config": {"benchmark": "ruler", "model": "m"}, "presses": presses}))
    with open(run / "predictions.jsonl", "w") as f:  # no metrics.json: the run was interrupted
        for i in range(4):
            for label, score in (("full", 1.0), ("spark@0.8", 1.0), ("spark@0.8/zero", float(i % 2))):
                f.write(json.dumps({**_pred("t", i, label, score), "press": label, "metric": "string_match_all",
                                    "prediction": "x" if score else "", "answers": ["x"]}) + "\n")
    text, _ = write_report([run], reference="spark@0.8/zero")
    assert "**Unfinished:**" in text and "Paired difference to `spark@0.8/zero`" in text
    row = next(x for x in text.splitlines() if x.startswith("| `spark@0.8` |") and "tasks" in x)
    assert "| 50.00 |" in row  # 100 vs 50 on the same samples
    with pytest.raises(ValueError, match="reference press 'nope'"):
        write_report([run], reference="nope")
    res = invoke("report", str(run), "--reference", "nope")
    assert res.exit_code == 2 and "nope" in res.output


def test_report_needs_a_run_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither metrics.json nor predictions.jsonl"):
        write_report([tmp_path / "empty"])


def test_report_refuses_runs_made_on_different_samples(tmp_path):
    """Two runs whose sample ids mean different samples (another haystack, seed, needle...) must not be paired."""
    scores = {"niah": {"full": 100.0}}
    a = _fake_run(tmp_path / "a", "niah", scores, {"full": _press("full")})
    b = _fake_run(tmp_path / "b", "niah", {"niah": {"snapkv@128": 50.0}}, {"snapkv@128": _press("snapkv", budget=128)})
    for path, digest in ((a, "1" * 64), (b, "2" * 64)):
        cfg = json.loads((path / "config.json").read_text())
        (path / "config.json").write_text(json.dumps({**cfg, "haystack_sha256": digest}))
    with pytest.raises(ValueError, match="made different samples under the same ids .*haystack"):
        write_report([a, b], tmp_path / "rep")
    r = invoke("report", a, b)
    assert r.exit_code == 2 and "report them separately" in " ".join(r.output.split())
    # Same haystack: merged as before.
    cfg = json.loads((b / "config.json").read_text())
    (b / "config.json").write_text(json.dumps({**cfg, "haystack_sha256": "1" * 64}))
    text, _ = write_report([a, b], tmp_path / "rep")
    assert "`snapkv@128`" in text and "`full`" in text


def test_cli_prints_user_text_literally(tmp_path):
    """Brackets in paths or messages are not Rich markup: no crash, nothing dropped."""
    r = invoke("report", tmp_path / "run[/b]")
    assert r.exit_code == 2 and "run[/b]" in r.output and "does not exist" in r.output


def test_report_merges_runs_that_differ_only_in_what_does_not_define_the_samples(tmp_path):
    """NIAH samples do not depend on the seed; runs without content digests (older ones) compare paths."""
    a = _fake_run(tmp_path / "a", "niah", {"niah": {"full": 100.0}}, {"full": _press("full")})
    b = _fake_run(tmp_path / "b", "niah", {"niah": {"snapkv@128": 50.0}}, {"snapkv@128": _press("snapkv", budget=128)})
    for path, seed in ((a, 42), (b, 7)):
        cfg = json.loads((path / "config.json").read_text())
        cfg["config"].update(seed=seed, haystack=["essays/"])
        (path / "config.json").write_text(json.dumps(cfg))
    text, _ = write_report([a, b], tmp_path / "rep")
    assert "`snapkv@128`" in text
    cfg = json.loads((b / "config.json").read_text())
    cfg["config"]["haystack"] = ["other/"]
    (b / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="haystack: \\['essays/'\\] vs \\['other/'\\]"):
        write_report([a, b], tmp_path / "rep")

