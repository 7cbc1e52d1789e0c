"""LongBench from local JSONL files the tests write: loading, prompts, middle truncation, rules, errors, scores."""

from __future__ import annotations

import json

import pytest

from sparkv.eval.config import EvalConfig, EvalError
from sparkv.eval.runner import run_eval
from sparkv.eval.tasks.longbench import (
    DATASET2MAXLEN,
    DATASET2PROMPT,
    LONGBENCH_TASKS,
    NO_CHAT_TEMPLATE,
    build_sample,
    generate_longbench,
    read_jsonl,
    task_file,
    truncate_middle,
)

ENGLISH_16 = ("narrativeqa qasper multifieldqa_en hotpotqa 2wikimqa musique gov_report qmsum multi_news trec "
              "triviaqa samsum passage_count passage_retrieval_en lcc repobench-p").split()


def record(task, i, context="Alice met Bob in Paris. " * 5, answers=("Paris",), **extra):
    return {"input": f"Where did Alice meet Bob? ({i})", "context": context, "answers": list(answers),
            "length": 40 + i * 5000, "dataset": task, "language": "en", "all_classes": extra.pop("all_classes", None),
            "_id": f"{task}-{i}", **extra}


def write(tmp_path, task, records, name=None):
    path = tmp_path / (name or f"{task}.jsonl")
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_sixteen_english_tasks_configured():
    assert sorted(LONGBENCH_TASKS) == sorted(ENGLISH_16)
    assert set(DATASET2MAXLEN) == set(ENGLISH_16)
    assert DATASET2MAXLEN["gov_report"] == 512 and DATASET2MAXLEN["hotpotqa"] == 32
    for task in ENGLISH_16:
        assert DATASET2PROMPT[task].count("{context}") == 1


def test_read_jsonl_and_errors(tmp_path):
    write(tmp_path, "hotpotqa", [record("hotpotqa", i) for i in range(3)])
    rows = read_jsonl(tmp_path / "hotpotqa.jsonl", limit=2)
    assert [r["_id"] for r in rows] == ["hotpotqa-0", "hotpotqa-1"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "x", "context": "y"}\n')
    with pytest.raises(ValueError, match="missing field"):
        read_jsonl(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match=":1: not valid JSON"):
        read_jsonl(bad)


def test_task_file_lookup(tmp_path):
    (tmp_path / "data").mkdir()
    write(tmp_path / "data", "qasper", [record("qasper", 0)])
    assert task_file(tmp_path, "qasper").name == "qasper.jsonl"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        task_file(tmp_path / "nope", "qasper")
    with pytest.raises(FileNotFoundError, match="no hotpotqa.jsonl"):
        task_file(tmp_path, "hotpotqa")
    with pytest.raises(ValueError, match="unknown LongBench task"):
        task_file(tmp_path, "dureader")
    with pytest.raises(ValueError, match="LongBench-E has no task"):
        task_file(tmp_path, "narrativeqa", longbench_e=True)


def test_prompt_is_the_official_template(fmt):
    r = record("hotpotqa", 0)
    s = build_sample("hotpotqa", r, fmt, max_length=10_000)
    assert s.context + s.question == DATASET2PROMPT["hotpotqa"].format(**r)
    assert s.question.endswith(f"Question: {r['input']}\nAnswer:")
    assert s.max_new_tokens == 32 and s.chat_template and s.metric == "longbench:hotpotqa"
    for task in NO_CHAT_TEMPLATE:
        if task in DATASET2PROMPT:
            assert not build_sample(task, record(task, 0, all_classes=["a"]), fmt, 10_000).chat_template
    code = build_sample("lcc", record("lcc", 0, context="def f(x):\n    return {x}\n"), fmt, 10_000)
    assert code.context.endswith("return {x}\n") and code.question == "Next line of code:\n"


def test_middle_truncation(fmt):
    long_context = " ".join(f"Sentence number {i} is here." for i in range(400))
    r = record("narrativeqa", 0, context=long_context)
    full = DATASET2PROMPT["narrativeqa"].format(**r)
    assert fmt.count_text(full) > 600
    s = build_sample("narrativeqa", r, fmt, max_length=300)
    assert s.meta["truncated"]
    assert s.context.startswith("You are given a story")  # the head survives
    assert s.question == DATASET2PROMPT["narrativeqa"].split("{context}")[1].format(**r)  # the tail survives
    assert "number 200 is" not in s.context  # the middle is gone
    assert fmt.count_text(s.context + s.question) <= 302  # decode/re-encode may merge at the seam
    text, cut = truncate_middle(fmt, "short text", 300)
    assert text == "short text" and not cut


def test_run_longbench_with_scripted_backend(tmp_path, scripted):
    data = tmp_path / "lb"
    data.mkdir()
    write(data, "hotpotqa", [record("hotpotqa", i) for i in range(3)])
    write(data, "passage_count", [record("passage_count", i, answers=["5"]) for i in range(2)])
    write(data, "trec", [record("trec", i, answers=["Location"], all_classes=["Location", "Human"]) for i in range(2)])
    cfg = EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["hotpotqa", "passage_count", "trec"],
                     presses=["full", "snapkv"], budgets=[96], out=str(tmp_path / "run"))
    m = run_eval(cfg, backend=scripted, progress=False)
    # the scripted "full" press answers with the references, snapkv with noise
    assert m["scores"]["hotpotqa"] == {"full": 100.0, "snapkv@96": 0.0}
    assert m["scores"]["passage_count"]["full"] == 100.0
    assert m["scores"]["trec"]["full"] == 100.0
    assert m["counts"]["hotpotqa"] == {"full": 3, "snapkv@96": 3}
    assert set(m["by_length_bucket"]["hotpotqa"]) == {"0-4k", "4-8k", "8k+"}
    rows = [json.loads(x) for x in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    trec = [r for r in rows if r["task"] == "trec"][0]
    assert trec["all_classes"] == ["Location", "Human"] and trec["metric"] == "longbench:trec"


def test_longbench_errors(tmp_path, scripted):
    with pytest.raises(EvalError, match="does not exist"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path / "missing"), out=str(tmp_path / "o")),
                 backend=scripted, progress=False)
    with pytest.raises(EvalError, match="needs --data-dir"):
        run_eval(EvalConfig(benchmark="longbench", out=str(tmp_path / "o")), backend=scripted, progress=False)
    write(tmp_path, "qasper", [record("qasper", 0)])
    with pytest.raises(EvalError, match="unknown LongBench task"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=["qasper", "dureader"],
                            out=str(tmp_path / "o")), backend=scripted, progress=False)
    with pytest.raises(EvalError, match="exceed the model's context .* lower --max-length to at most"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=["qasper"], max_length=8100,
                            out=str(tmp_path / "o")), backend=scripted, progress=False)


def test_generate_longbench_rejects_duplicate_ids(tmp_path, fmt):
    write(tmp_path, "musique", [record("musique", 0), record("musique", 0)])
    with pytest.raises(ValueError, match="duplicate _id"):
        list(generate_longbench("musique", tmp_path, fmt, 1000))


def test_default_max_length_fits_the_model(tmp_path, bpe_tokenizer):
    from eval_helpers import ScriptedBackend

    long_context = " ".join(f"Sentence number {i} is here." for i in range(600))
    write(tmp_path, "narrativeqa", [record("narrativeqa", 0, context=long_context)])
    write(tmp_path, "lcc", [record("lcc", 0, context=long_context, answers=["x = 1"])])
    backend = ScriptedBackend(bpe_tokenizer, max_context=700)
    run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=["narrativeqa", "lcc"],
                        out=str(tmp_path / "o")), backend=backend, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "o" / "predictions.jsonl").read_text().splitlines()]
    for r in rows:
        assert r["truncated"] and r["prompt_tokens"] + DATASET2MAXLEN[r["task"]] <= 700
        assert r["prompt_tokens"] + DATASET2MAXLEN[r["task"]] > 650  # and uses nearly all of it


def test_middle_truncation_counts_the_bos_like_pred_py(fmt):
    """pred.py tokenizes with special tokens: the BOS counts toward max_length and takes a slot of the first half."""
    text = " ".join(f"word{i}" for i in range(400))
    plain = fmt.encode(text, special_tokens=False)
    with_bos = fmt.encode(text, special_tokens=True)
    assert len(with_bos) == len(plain) + 1  # this tokenizer adds <s>
    same, cut = truncate_middle(fmt, text, len(plain))  # fits without the BOS, not with it: truncated
    assert cut
    half = len(plain) // 2
    expected = (fmt.tokenizer.decode(with_bos[:half], skip_special_tokens=True)
                + fmt.tokenizer.decode(with_bos[-half:], skip_special_tokens=True))
    assert same == expected
    assert truncate_middle(fmt, text, len(with_bos)) == (text, False)


def test_only_samsum_samples_stop_at_newline(fmt):
    assert build_sample("samsum", record("samsum", 0), fmt, max_length=10_000).stop_at_newline
    assert not build_sample("trec", record("trec", 0, all_classes=["a"]), fmt, 10_000).stop_at_newline
    assert not build_sample("hotpotqa", record("hotpotqa", 0), fmt, 10_000).stop_at_newline


@pytest.mark.parametrize("task,change,message", [
    ("hotpotqa", {"answers": 1}, "'answers' must be a non-empty list"),
    ("hotpotqa", {"answers": []}, "'answers' must be a non-empty list"),
    ("hotpotqa", {"answers": [""]}, "'answers' must be a non-empty list"),
    ("hotpotqa", {"context": None}, "field 'context' must be a string"),
    ("hotpotqa", {"input": None}, "field 'input' must be a string"),
    ("hotpotqa", {"context": "broken \ud83d text"}, "field 'context' is not valid text"),
    ("trec", {"all_classes": None}, "scored against 'all_classes'"),
    ("passage_retrieval_en", {"answers": ["2"]}, "answers are written like 'Paragraph N'"),
])
def test_hand_made_records_are_checked_before_the_model_loads(tmp_path, task, change, message):
    """A record whose metric could never match, or whose fields are of the wrong type, fails with file:line before
    any model work (the scripted backend below would count calls)."""
    from eval_helpers import ScriptedBackend

    rec = {**record(task, 0, all_classes=["Location"] if task == "trec" else None), **change}
    write(tmp_path, task, [rec])
    backend = ScriptedBackend(None)
    with pytest.raises(EvalError, match=f"{task}.jsonl:1: .*{message}"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=[task], out=str(tmp_path / "o")),
                 backend=backend, progress=False)
    assert backend.calls == []


def test_empty_task_file_and_tiny_max_length_are_refused(tmp_path, scripted):
    write(tmp_path, "qasper", [])
    with pytest.raises(EvalError, match="no records"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=["qasper"], out=str(tmp_path / "o")),
                 backend=scripted, progress=False)
    write(tmp_path, "qasper", [record("qasper", 0)])
    with pytest.raises(EvalError, match="--max-length must be >= 2"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(tmp_path), tasks=["qasper"], max_length=1,
                            out=str(tmp_path / "o")), backend=scripted, progress=False)


def test_resume_compares_the_data_files_by_content(tmp_path, scripted):
    """A corrected task file is noticed on resume; the same folder spelled another way is not a change."""
    data = tmp_path / "lb"
    data.mkdir()
    write(data, "qasper", [record("qasper", 0)])
    out = str(tmp_path / "run")
    run_eval(EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["qasper"], out=out), backend=scripted,
             progress=False)
    run_eval(EvalConfig(benchmark="longbench", data_dir=str(data) + "/", tasks=["qasper"], out=out),
             backend=scripted, progress=False)  # same files: resumes
    write(data, "qasper", [record("qasper", 0, answers=("Lyon",))])
    with pytest.raises(EvalError, match="data_sha256"):
        run_eval(EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["qasper"], out=out), backend=scripted,
                 progress=False)


def test_adding_a_task_to_a_longbench_run_folder_resumes(tmp_path, scripted):
    data = tmp_path / "lb"
    data.mkdir()
    write(data, "qasper", [record("qasper", 0)])
    write(data, "hotpotqa", [record("hotpotqa", 0)])
    out = str(tmp_path / "run")
    run_eval(EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["qasper"], out=out), backend=scripted,
             progress=False)
    m = run_eval(EvalConfig(benchmark="longbench", data_dir=str(data), tasks=["qasper", "hotpotqa"], out=out),
                 backend=scripted, progress=False)
    assert set(m["scores"]) == {"qasper", "hotpotqa"}
