"""LongBench (v1, English tasks) from its official JSONL files, with the official prompts and rules.

Data: LongBench's ``data.zip`` unpacks to ``data/<task>.jsonl`` (and ``<task>_e.jsonl`` for LongBench-E), one JSON
object per line with ``input``, ``context``, ``answers``, ``length``, ``dataset``, ``language``, ``all_classes`` and
``_id``. Pass that folder (or its parent) as ``--data-dir``; nothing is downloaded.

Rules restated from LongBench's ``pred.py`` / ``eval.py``:
- prompt = ``dataset2prompt[task]`` formatted with the sample; generation length ``dataset2maxlen[task]``;
- a prompt longer than ``max_length`` tokens keeps its first and last ``max_length // 2`` tokens (middle
  truncation, decoded back to text);
- no chat template for trec, triviaqa, samsum, lsht, lcc, repobench-p (few-shot / completion tasks);
- metrics in :mod:`sparkv.eval.metrics`.
The prompt is handed to the model as context (everything up to the end of the document) + question (the rest of
the template with the sample's ``input``). samsum follows ``pred.py``'s generation rule (``Sample.stop_at_newline``):
generation stops at a newline, and neither a newline nor the end of text may be the first token (the scorer then
keeps the first line, as for trec and triviaqa).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from sparkv.eval.tasks.common import PromptFormat, Sample

DATASET2PROMPT: dict[str, str] = {
    "narrativeqa": (
        "You are given a story, which can be either a novel or a movie script, and a question. Answer the question "
        "as concisely as you can, using a single phrase if possible. Do not provide any explanation.\n\nStory: "
        "{context}\n\nNow, answer the question based on the story as concisely as you can, using a single phrase "
        "if possible. Do not provide any explanation.\n\nQuestion: {input}\n\nAnswer:"
    ),
    "qasper": (
        "You are given a scientific article and a question. Answer the question as concisely as you can, using a "
        "single phrase or sentence if possible. If the question cannot be answered based on the information in "
        "the article, write \"unanswerable\". If the question is a yes/no question, answer \"yes\", \"no\", or "
        "\"unanswerable\". Do not provide any explanation.\n\nArticle: {context}\n\n Answer the question based on "
        "the above article as concisely as you can, using a single phrase or sentence if possible. If the question "
        "cannot be answered based on the information in the article, write \"unanswerable\". If the question is a "
        "yes/no question, answer \"yes\", \"no\", or \"unanswerable\". Do not provide any explanation.\n\n"
        "Question: {input}\n\nAnswer:"
    ),
    "multifieldqa_en": (
        "Read the following text and answer briefly.\n\n{context}\n\nNow, answer the following question based on "
        "the above text, only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "hotpotqa": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
        "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "2wikimqa": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
        "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "musique": (
        "Answer the question based on the given passages. Only give me the answer and do not output any other "
        "words.\n\nThe following are given passages.\n{context}\n\nAnswer the question based on the given "
        "passages. Only give me the answer and do not output any other words.\n\nQuestion: {input}\nAnswer:"
    ),
    "gov_report": (
        "You are given a report by a government agency. Write a one-page summary of the report.\n\nReport:\n"
        "{context}\n\nNow, write a one-page summary of the report.\n\nSummary:"
    ),
    "qmsum": (
        "You are given a meeting transcript and a query containing a question or instruction. Answer the query in "
        "one or more sentences.\n\nTranscript:\n{context}\n\nNow, answer the query based on the above meeting "
        "transcript in one or more sentences.\n\nQuery: {input}\nAnswer:"
    ),
    "multi_news": (
        "You are given several news passages. Write a one-page summary of all news. \n\nNews:\n{context}\n\n"
        "Now, write a one-page summary of all the news.\n\nSummary:"
    ),
    "trec": (
        "Please determine the type of the question below. Here are some examples of questions.\n\n{context}\n"
        "{input}"
    ),
    "triviaqa": (
        "Answer the question based on the given passage. Only give me the answer and do not output any other "
        "words. The following are some examples.\n\n{context}\n\n{input}"
    ),
    "samsum": (
        "Summarize the dialogue into a few short sentences. The following are some examples.\n\n{context}\n\n{input}"
    ),
    "passage_count": (
        "There are some paragraphs below sourced from Wikipedia. Some of them may be duplicates. Please carefully "
        "read these paragraphs and determine how many unique paragraphs there are after removing duplicates. In "
        "other words, how many non-repeating paragraphs are there in total?\n\n{context}\n\nPlease enter the final "
        "count of unique paragraphs after removing duplicates. The output format should only contain the number, "
        "such as 1, 2, 3, and so on.\n\nThe final answer is: "
    ),
    "passage_retrieval_en": (
        "Here are 30 paragraphs from Wikipedia, along with an abstract. Please determine which paragraph the "
        "abstract is from.\n\n{context}\n\nThe following is an abstract.\n\n{input}\n\nPlease enter the number of "
        "the paragraph that the abstract is from. The answer format must be like \"Paragraph 1\", \"Paragraph 2\", "
        "etc.\n\nThe answer is: "
    ),
    "lcc": "Please complete the code given below. \n{context}Next line of code:\n",
    "repobench-p": "Please complete the code given below. \n{context}{input}Next line of code:\n",
}

DATASET2MAXLEN: dict[str, int] = {
    "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "hotpotqa": 32, "2wikimqa": 32, "musique": 32,
    "gov_report": 512, "qmsum": 512, "multi_news": 512, "trec": 64, "triviaqa": 32, "samsum": 128,
    "passage_count": 32, "passage_retrieval_en": 32, "lcc": 64, "repobench-p": 64,
}
LONGBENCH_TASKS = tuple(DATASET2PROMPT)
LONGBENCH_E_TASKS = ("qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "gov_report", "multi_news", "trec",
                     "triviaqa", "samsum", "passage_count", "passage_retrieval_en", "lcc", "repobench-p")
NO_CHAT_TEMPLATE = ("trec", "triviaqa", "samsum", "lsht", "lcc", "repobench-p")
REQUIRED_FIELDS = ("input", "context", "answers")


def task_file(data_dir: str | Path, task: str, longbench_e: bool = False) -> Path:
    """Path of ``<task>.jsonl`` (``<task>_e.jsonl``) in ``data_dir`` or ``data_dir/data``; clear errors."""
    if task not in DATASET2PROMPT:
        raise ValueError(f"unknown LongBench task {task!r}; the English tasks are: {', '.join(LONGBENCH_TASKS)}")
    if longbench_e and task not in LONGBENCH_E_TASKS:
        raise ValueError(f"LongBench-E has no task {task!r}; its tasks are: {', '.join(LONGBENCH_E_TASKS)}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"LongBench data dir {str(root)!r} does not exist; unpack LongBench's data.zip and pass its data/ folder"
        )
    name = f"{task}_e.jsonl" if longbench_e else f"{task}.jsonl"
    for folder in (root, root / "data"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no {name} in LongBench data dir {str(root)!r} (nor in its data/ subfolder)")


CLASSIFICATION_TASKS = ("trec", "lsht")  # scored against all_classes
RETRIEVAL_TASKS = ("passage_retrieval_en", "passage_retrieval_zh")  # answers written "Paragraph N" (段落N)


def _check_record(record: dict[str, Any], where: str, task: str | None) -> None:
    """Field types as LongBench's own files have them, so a hand-made file fails here, before the model loads,
    instead of mid-run (or silently: a None question, an answer that can never match)."""
    for key in ("input", "context"):
        if not isinstance(record[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string, got {type(record[key]).__name__}")
    answers = record["answers"]
    if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
        raise ValueError(f"{where}: field 'answers' must be a non-empty list of non-empty strings, got {answers!r}")
    for key in ("input", "context"):
        try:
            record[key].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: field {key!r} is not valid text ({exc.reason})") from None
    for a in answers:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(f"{where}: an answer is not valid text ({exc.reason})") from None
    if task in CLASSIFICATION_TASKS:
        classes = record.get("all_classes")
        if not isinstance(classes, list) or not classes:
            raise ValueError(f"{where}: {task} is scored against 'all_classes' (a non-empty list); the record has "
                             f"{classes!r}")
    if task in RETRIEVAL_TASKS:
        import re

        form = "Paragraph N" if task.endswith("_en") else "段落N"
        bad = [a for a in answers if not re.search(form.replace("N", r"\d+"), a)]
        if bad:
            raise ValueError(f"{where}: {task} answers are written like {form!r}; got {bad[0]!r}")


def read_jsonl(path: str | Path, limit: int | None = None, task: str | None = None) -> list[dict[str, Any]]:
    """Records of a LongBench JSONL file (blank lines skipped); ``ValueError`` names a bad line (invalid JSON, a
    missing field, a wrong field type; with ``task``, what its metric needs) or an empty file."""
    return _parse_lines(Path(path).read_text(encoding="utf-8"), path, limit, task)


def load_task(data_dir: str | Path, task: str, longbench_e: bool = False, limit: int | None = None
              ) -> tuple[list[dict[str, Any]], str]:
    """``(records, sha256 of the file)`` of one task, the file read once (checked as by :func:`read_jsonl`)."""
    path = task_file(data_dir, task, longbench_e)
    raw = path.read_bytes()
    return _parse_lines(raw.decode("utf-8"), path, limit, task), hashlib.sha256(raw).hexdigest()


def _parse_lines(text: str, path, limit: int | None, task: str | None) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        missing = [k for k in REQUIRED_FIELDS if k not in record]
        if missing:
            raise ValueError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        if isinstance(record["answers"], str):
            record["answers"] = [record["answers"]]
        _check_record(record, f"{path}:{number}", task)
        record.setdefault("all_classes", None)
        record.setdefault("_id", f"line{number}")
        records.append(record)
        if limit is not None and len(records) >= limit:
            break
    if not records:
        raise ValueError(f"{path}: no records (the file is empty)")
    return records


def truncate_middle(fmt: PromptFormat, prompt: str, max_length: int) -> tuple[str, bool]:
    """LongBench's middle truncation: keep the first and last ``max_length // 2`` tokens when longer. As in
    ``pred.py`` the tokens are counted and cut with the tokenizer's special tokens (a BOS counts and takes a slot
    of the first half; decoding drops it)."""
    ids = fmt.encode(prompt, special_tokens=True)
    if len(ids) <= max_length:
        return prompt, False
    half = max_length // 2
    if half < 1:
        raise ValueError(f"max_length must be >= 2 (half of it is kept at each end), got {max_length}")
    decode = fmt.tokenizer.decode
    return decode(ids[:half], skip_special_tokens=True) + decode(ids[-half:], skip_special_tokens=True), True


def build_sample(task: str, record: dict[str, Any], fmt: PromptFormat, max_length: int,
                 max_new_tokens: int | None = None) -> Sample:
    """One LongBench record -> a :class:`Sample` (prompt, truncation, chat-template rule, metric)."""
    template = DATASET2PROMPT[task]
    head, tail = template.split("{context}")
    context = head.format(**record) + record["context"]
    question = tail.format(**record)
    prompt, truncated = truncate_middle(fmt, context + question, max_length)
    if truncated:
        if question and prompt.endswith(question):
            context = prompt[: len(prompt) - len(question)]
        else:  # the question itself was cut: hand the whole prompt over as context
            context, question = prompt, ""
    chat = task not in NO_CHAT_TEMPLATE
    return Sample(
        task=task,
        id=str(record["_id"]),
        context=context,
        question=question,
        answers=[str(a) for a in record["answers"]],
        metric=f"longbench:{task}",
        max_new_tokens=max_new_tokens or DATASET2MAXLEN[task],
        chat_template=chat,
        stop_at_newline=task == "samsum",
        meta={
            "length": record.get("length"),
            "all_classes": record.get("all_classes"),
            "truncated": truncated,
            "prompt_tokens": fmt.count(context, question, "", chat),
        },
    )


def generate_longbench(
    task: str,
    data_dir: str | Path,
    fmt: PromptFormat,
    max_length: int,
    limit: int | None = None,
    longbench_e: bool = False,
    max_new_tokens: int | None = None,
    records: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[str, Callable[[], Sample]]]:
    """Yield ``(sample_id, make)`` for the records of one task file (``records``: already read by :func:`load_task`)."""
    if records is None:
        records = read_jsonl(task_file(data_dir, task, longbench_e), limit, task)
    seen: set[str] = set()
    for record in records:
        sample_id = str(record["_id"])
        if sample_id in seen:
            raise ValueError(f"{task}: duplicate _id {sample_id!r}; sample ids must be unique for resuming")
        seen.add(sample_id)
        yield sample_id, (lambda record=record: build_sample(task, record, fmt, max_length, max_new_tokens))
