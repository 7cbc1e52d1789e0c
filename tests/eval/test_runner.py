"""Runner: press sweeps, config layering, resumable predictions, guards, metrics."""

from __future__ import annotations

import json

import pytest

from sparkv.config import parse_press
from sparkv.eval.config import EvalConfig, EvalError, press_label
from sparkv.eval.runner import PredictionStore, compute_metrics, run_eval


def ruler_cfg(tmp_path, **kw):
    base = dict(benchmark="ruler", tasks=["niah_single_1", "vt"], lengths=[1200], limit=3,
                presses=["full", "snapkv+spark"], key_ratios=[0.5, 0.8], budgets=[96], out=str(tmp_path / "run"))
    base.update(kw)
    return EvalConfig(**base)


def test_press_labels_and_expansion():
    assert press_label(parse_press("full")) == "full"
    assert press_label(parse_press("snapkv", budget=128)) == "snapkv@128"
    assert press_label(parse_press("snapkv", token_ratio=0.5)) == "snapkv@r0.5"
    assert press_label(parse_press("snapkv+spark", budget=128, key_ratio=0.8)) == "snapkv@128+spark@0.8"
    assert press_label(parse_press("spark", key_ratio=0.5, recovery="constant")) == "spark@0.5/constant0.01"
    assert press_label(parse_press("pyramidkv+think", budget=256, key_ratio=0.5)) == "pyramidkv@256+think@0.5"
    cfg = EvalConfig(presses=["full,snapkv", "snapkv+spark", "spark", "think"], key_ratios="0.5,0.8",
                     recoveries=["mean", "zero"], budgets=[128])
    labels = [label for label, _, _ in cfg.press_configs()]
    assert labels == ["full", "snapkv@128", "snapkv@128+spark@0.5", "snapkv@128+spark@0.5/zero",
                      "snapkv@128+spark@0.8", "snapkv@128+spark@0.8/zero", "spark@0.5", "spark@0.5/zero",
                      "spark@0.8", "spark@0.8/zero", "think@0.5", "think@0.8"]


def test_config_errors():
    with pytest.raises(EvalError, match="unknown press component"):
        EvalConfig(presses=["snapkv+magic"])
    with pytest.raises(EvalError, match="key ratio"):
        EvalConfig(presses=["spark"], key_ratios=[1.5])
    with pytest.raises(EvalError, match="not both"):
        EvalConfig(budgets=[128], token_ratio=0.5)
    with pytest.raises(EvalError, match="recovery"):
        EvalConfig(recoveries=["median"])
    with pytest.raises(EvalError, match="depths"):
        EvalConfig(benchmark="niah", depths=[25])
    with pytest.raises(EvalError, match="benchmark"):
        EvalConfig(benchmark="mmlu")


def test_defaults_yaml_cli_layering(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: my-model\npress: [full, snapkv+think]\nkey-ratio: 0.8\nbudget: 128\nseed: 5\nlimit: 7\n")
    cfg = EvalConfig.resolve("ruler", y, {"seed": 9, "limit": None, "presses": None})
    assert cfg.model == "my-model" and cfg.seed == 9 and cfg.limit == 7
    assert cfg.presses == ["full", "snapkv+think"] and cfg.key_ratios == [0.8] and cfg.budgets == [128]
    assert cfg.recoveries == ["mean"] and cfg.out == "runs/ruler"  # defaults
    y.write_text("nonsense_key: 1\n")
    with pytest.raises(EvalError, match="unknown config key"):
        EvalConfig.resolve("ruler", y, {})
    with pytest.raises(EvalError, match="does not exist"):
        EvalConfig.resolve("ruler", tmp_path / "missing.yaml", {})


def test_run_writes_outputs_and_uses_one_call_per_sample(tmp_path, scripted):
    cfg = ruler_cfg(tmp_path)
    m = run_eval(cfg, backend=scripted, progress=False)
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.json", "predictions.jsonl", "metrics.json"}
    labels = ["full", "snapkv@96+spark@0.5", "snapkv@96+spark@0.8"]
    assert len(scripted.calls) == 6 and all(call[2] == labels for call in scripted.calls)
    assert m["scores"]["niah_single_1"]["full"] == 100.0
    assert m["average"]["full"] == 100.0
    assert m["presses"]["snapkv@96+spark@0.8"]["key_ratio"] == 0.8
    assert m["memory"]["snapkv@96+spark@0.5"]["allocated_over_dense"] == pytest.approx(0.5)
    assert m["by_length"]["1200"]["full"] == 100.0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["key_ratios"] == [0.5, 0.8] and config["max_context"] == 8192
    assert [p["label"] for p in config["presses"]] == labels
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 18
    assert {"task", "id", "label", "press", "key_ratio", "prediction", "answers", "score", "memory"} <= set(rows[0])


def test_resume_after_interruption_and_new_presses(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    cfg = ruler_cfg(tmp_path)
    first = ScriptedBackend(bpe_tokenizer, fail_after=4)
    with pytest.raises(KeyboardInterrupt):
        run_eval(cfg, backend=first, progress=False)
    assert len(PredictionStore(tmp_path / "run" / "predictions.jsonl").rows) == 4 * 3
    # a torn last line (killed mid-write) is ignored and regenerated
    with open(tmp_path / "run" / "predictions.jsonl", "a") as f:
        f.write('{"task": "vt", "id": "1200-2", "lab')
    second = ScriptedBackend(bpe_tokenizer)
    run_eval(cfg, backend=second, progress=False)
    # tasks are interleaved (a run stopped early covers every task): the first run did 2 samples of each
    assert [(t, i) for t, i, _ in second.calls] == [("niah_single_1", "1200-2"), ("vt", "1200-2")]
    # nothing left: a rerun generates nothing
    third = ScriptedBackend(bpe_tokenizer)
    m = run_eval(cfg, backend=third, progress=False)
    assert third.calls == [] and m["counts"]["vt"]["full"] == 3
    # a new press and a new λ: only those are generated, for every sample
    fourth = ScriptedBackend(bpe_tokenizer)
    m = run_eval(ruler_cfg(tmp_path, presses=["full", "snapkv+spark", "snapkv"], key_ratios=[0.5, 0.8, 0.3]),
                 backend=fourth, progress=False)
    assert len(fourth.calls) == 6 and all(c[2] == ["snapkv@96+spark@0.3", "snapkv@96"] for c in fourth.calls)
    assert set(m["presses"]) == {"full", "snapkv@96", "snapkv@96+spark@0.3", "snapkv@96+spark@0.5",
                                 "snapkv@96+spark@0.8"}
    # fewer samples: metrics only count the current plan
    m = run_eval(ruler_cfg(tmp_path, limit=1), backend=ScriptedBackend(bpe_tokenizer), progress=False)
    assert m["counts"]["vt"]["full"] == 1


def test_changed_data_config_refuses_to_mix(tmp_path, scripted, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    run_eval(ruler_cfg(tmp_path, limit=1), backend=scripted, progress=False)
    with pytest.raises(EvalError, match="seed: 42 -> 7"):
        run_eval(ruler_cfg(tmp_path, limit=1, seed=7), backend=scripted, progress=False)
    fresh = ScriptedBackend(bpe_tokenizer)
    run_eval(ruler_cfg(tmp_path, limit=1, seed=7), backend=fresh, overwrite=True, progress=False)
    assert len(fresh.calls) == 2


def test_max_context_guard(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    small = ScriptedBackend(bpe_tokenizer, max_context=1024)
    with pytest.raises(EvalError, match="exceed the model's context of 1024"):
        run_eval(ruler_cfg(tmp_path), backend=small, progress=False)
    with pytest.raises(EvalError, match="exceed the model's context of 400"):
        run_eval(ruler_cfg(tmp_path, max_context=400), backend=ScriptedBackend(bpe_tokenizer), progress=False)
    # niah: the question and generation on top of an allowed length still must fit
    cfg = EvalConfig(benchmark="niah", lengths=[500], depths=[0.5], out=str(tmp_path / "n"), max_context=510)
    with pytest.raises(EvalError, match="prompt tokens"):
        run_eval(cfg, backend=ScriptedBackend(bpe_tokenizer), progress=False)


def test_backend_value_errors_become_eval_errors(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    class Short(ScriptedBackend):
        def generate_many(self, sample, presses):
            raise ValueError("context too short for press 'snapkv'")

    with pytest.raises(EvalError, match="niah_single_1/1200-0: context too short"):
        run_eval(ruler_cfg(tmp_path), backend=Short(bpe_tokenizer), progress=False)


def test_compute_metrics_recomputes_scores():
    rows = [
        {"task": "a", "id": "1", "label": "full", "metric": "string_match_all", "prediction": "x y",
         "answers": ["x", "y"], "score": 0.0, "length": 100},
        {"task": "a", "id": "2", "label": "full", "metric": "string_match_all", "prediction": "x",
         "answers": ["x", "y"], "length": 200},
        {"task": "b", "id": "1", "label": "full", "metric": "substring", "prediction": "no", "answers": ["yes"],
         "length": 100},
    ]
    m = compute_metrics(rows, "ruler")
    assert m["scores"] == {"a": {"full": 75.0}, "b": {"full": 0.0}}
    assert m["average"] == {"full": 37.5}
    assert m["by_length"] == {"100": {"full": 50.0}, "200": {"full": 50.0}}


def test_shards_split_the_plan_and_share_one_folder(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    from sparkv.eval.report import load_run

    backends = [ScriptedBackend(bpe_tokenizer) for _ in range(3)]
    first = run_eval(ruler_cfg(tmp_path, shard="0/3"), backend=backends[0], progress=False)
    assert first["rows"] == {"present": 2 * 3, "planned": 6 * 3}  # metrics say how far the shards got
    assert load_run(tmp_path / "run")["partial"]  # ... and the report does not take them as final
    for i in (1, 2):
        m = run_eval(ruler_cfg(tmp_path, shard=f"{i}/3"), backend=backends[i], progress=False)
    samples = [(t, sid) for b in backends for t, sid, _ in b.calls]
    assert len(samples) == 6 and len(set(samples)) == 6  # disjoint, and together the whole plan
    assert {t for t, _, _ in backends[0].calls} == {"niah_single_1", "vt"}  # tasks mixed over shards
    assert m["rows"] == {"present": 18, "planned": 18} and m["counts"]["vt"]["full"] == 3
    assert not load_run(tmp_path / "run")["partial"]
    unsharded = ScriptedBackend(bpe_tokenizer)
    assert run_eval(ruler_cfg(tmp_path), backend=unsharded, progress=False)["average"] == m["average"]
    assert unsharded.calls == []


@pytest.mark.parametrize("shard", ["3/3", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_is_refused(tmp_path, shard):
    with pytest.raises(EvalError, match="shard must be I/N"):
        ruler_cfg(tmp_path, shard=shard)


def test_overwrite_with_shards_is_refused(tmp_path, scripted):
    with pytest.raises(EvalError, match="--overwrite with --shard"):
        run_eval(ruler_cfg(tmp_path, shard="0/2"), backend=scripted, overwrite=True, progress=False)


def _append_rows(path, worker, n):
    store = PredictionStore(path)
    for i in range(n):
        store.append({"task": "t", "id": f"{worker}-{i}", "label": "full", "prediction": "x" * 5000})


def test_concurrent_appends_from_processes_stay_whole_lines(tmp_path):
    import multiprocessing

    path = tmp_path / "predictions.jsonl"
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_rows, args=(path, w, 200)) for w in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 600 and all(json.loads(line)["prediction"] == "x" * 5000 for line in lines)
    assert len(PredictionStore(path).rows) == 600


def test_reading_a_run_never_writes_to_it(tmp_path, scripted):
    from sparkv.eval.report import load_run

    run_eval(ruler_cfg(tmp_path, limit=1), backend=scripted, progress=False)
    pred = tmp_path / "run" / "predictions.jsonl"
    with open(pred, "a") as f:
        f.write('{"task": "vt", "id": "1200-0", "lab')  # a writer killed mid-line
    before = pred.read_bytes()
    pred.chmod(0o444)
    try:
        run = load_run(tmp_path / "run")  # a read-only run folder (e.g. a copied result) is fine
    finally:
        pred.chmod(0o644)
    assert pred.read_bytes() == before and len(run["predictions"]) == 2 * 3


def test_blank_needle_duplicates_and_short_lengths(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    for name in ("needle", "question", "answer"):
        with pytest.raises(EvalError, match=f"{name} must not be empty"):
            EvalConfig(benchmark="niah", **{name: "  "})
    cfg = EvalConfig(benchmark="niah", lengths=[300, 300, 200], depths=[0.5, 0.5, 1.0], presses=["full", "full"])
    assert cfg.lengths == [300, 200] and cfg.depths == [0.5, 1.0] and len(cfg.press_configs()) == 1
    # a length a task cannot be built at is an EvalError (clean CLI message), not a traceback
    with pytest.raises(EvalError, match="room"):
        run_eval(ruler_cfg(tmp_path, tasks=["niah_single_1"], lengths=[100]), backend=ScriptedBackend(bpe_tokenizer),
                 progress=False)


def test_resume_compares_haystack_contents_not_paths(tmp_path, bpe_tokenizer, haystack_text):
    from eval_helpers import ScriptedBackend

    hay = tmp_path / "hay.txt"
    hay.write_text(haystack_text[:20_000])

    def cfg(path):
        return EvalConfig(benchmark="niah", lengths=[300], depths=[0.5], haystack=[str(path)],
                          out=str(tmp_path / "run"))

    run_eval(cfg(hay), backend=ScriptedBackend(bpe_tokenizer), progress=False)
    again = ScriptedBackend(bpe_tokenizer)
    run_eval(cfg(tmp_path / "." / "hay.txt"), backend=again, progress=False)  # same text, another spelling: resumes
    assert again.calls == []
    hay.write_text(haystack_text[20_000:40_000])  # edited in place: refused
    with pytest.raises(EvalError, match="haystack_sha256"):
        run_eval(cfg(hay), backend=ScriptedBackend(bpe_tokenizer), progress=False)


def test_press_spec_with_spaces_expands_like_without():
    kw = dict(benchmark="ruler", key_ratios=[0.3, 0.8], budgets=[128, 256], recoveries=["mean", "zero"])
    spaced = [label for label, _, _ in EvalConfig(presses=["snapkv + spark"], **kw).press_configs()]
    plain = [label for label, _, _ in EvalConfig(presses=["snapkv+spark"], **kw).press_configs()]
    assert len(spaced) == 8 and spaced == plain


def test_close_key_ratios_get_distinct_labels():
    labels = [label for label, _, _ in EvalConfig(benchmark="ruler", presses=["spark"],
                                                  key_ratios=[0.5, 0.5000001]).press_configs()]
    assert labels == ["spark@0.5", "spark@0.5000001"]


def test_a_length_that_overflows_with_the_question_fails_before_anything_runs(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    backend = ScriptedBackend(bpe_tokenizer)
    cfg = EvalConfig(benchmark="niah", lengths=[300, 500], depths=[0.0, 1.0], out=str(tmp_path / "n"), max_context=510)
    with pytest.raises(EvalError, match=r"niah/L500-D0: .* prompt tokens .*\(question and answer come on top"):
        run_eval(cfg, backend=backend, progress=False)
    assert backend.calls == []  # the L300 cells did not run first


def test_a_length_too_short_for_a_task_fails_before_the_longer_lengths_run(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    backend = ScriptedBackend(bpe_tokenizer)
    cfg = EvalConfig(benchmark="ruler", tasks=["niah_single_1", "vt"], lengths=[1000, 300], limit=4,
                     out=str(tmp_path / "r"))
    with pytest.raises(EvalError, match="cannot fit in 300 tokens"):
        run_eval(cfg, backend=backend, progress=False)
    assert backend.calls == []
