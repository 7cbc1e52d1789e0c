"""Scoring functions of the benchmarks, restated from their published definitions.

Per-sample scores are in [0, 1]; benchmark tables report ``100 x mean`` (as RULER and LongBench do).

- RULER: ``string_match_all`` (fraction of the references found, case-insensitively, in the prediction) and
  ``string_match_part`` (1 if any reference is found; RULER's QA tasks), after RULER's prediction clean-up.
- NIAH: the answer found in the prediction (case-insensitive substring).
- LongBench (English): ``qa_f1`` with SQuAD-style normalisation, ``rouge_l`` (the summary-level ROUGE-L of the
  ``rouge`` package that LongBench calls, restated here without the dependency), ``classification``,
  ``retrieval``, ``count`` and ``code_sim`` (fuzzywuzzy's ``fuzz.ratio`` over difflib, which is what it computes
  without python-Levenshtein). ``longbench_score`` applies LongBench's scorer rules (first line only for trec,
  triviaqa, samsum, lsht; the best score over all references).
"""

from __future__ import annotations

import difflib
import re
import string
from collections import Counter
from typing import Callable, Sequence

# --------------------------------------------------------------------------------------------------------------
# RULER


_CONTROL = re.compile(r"[\x00-\x1f]")


def ruler_postprocess(prediction: str) -> str:
    """RULER's clean-up: strip, turn control characters into newlines, strip again."""
    return _CONTROL.sub("\n", prediction.strip()).strip()


def string_match_all(prediction: str, references: Sequence[str]) -> float:
    """Fraction of ``references`` contained (case-insensitively) in ``prediction``."""
    if not references:
        raise ValueError("string_match_all needs at least one reference")
    pred = prediction.lower()
    return sum(1.0 for r in references if r.lower() in pred) / len(references)


def string_match_part(prediction: str, references: Sequence[str]) -> float:
    """1.0 if any of ``references`` is contained (case-insensitively) in ``prediction``."""
    if not references:
        raise ValueError("string_match_part needs at least one reference")
    pred = prediction.lower()
    return max(1.0 if r.lower() in pred else 0.0 for r in references)


def substring_match(prediction: str, answer: str) -> float:
    """NIAH score: 1.0 when ``answer`` appears in ``prediction`` ignoring case."""
    return 1.0 if answer.strip().lower() in prediction.lower() else 0.0


# --------------------------------------------------------------------------------------------------------------
# LongBench


def normalize_answer(s: str) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, collapse whitespace (SQuAD / LongBench)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def f1_tokens(prediction: Sequence[str], ground_truth: Sequence[str]) -> float:
    common = Counter(prediction) & Counter(ground_truth)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction)
    recall = num_same / len(ground_truth)
    return 2 * precision * recall / (precision + recall)


def qa_f1_score(prediction: str, ground_truth: str, **_) -> float:
    return f1_tokens(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def _lcs_table(x: Sequence[str], y: Sequence[str]) -> list[list[int]]:
    table = [[0] * (len(y) + 1) for _ in range(len(x) + 1)]
    for i in range(1, len(x) + 1):
        row, prev = table[i], table[i - 1]
        xi = x[i - 1]
        for j in range(1, len(y) + 1):
            row[j] = prev[j - 1] + 1 if xi == y[j - 1] else max(prev[j], row[j - 1])
    return table


def _lcs_words(x: Sequence[str], y: Sequence[str]) -> list[str]:
    """Words of one longest common subsequence, traced back like the ``rouge`` package (iteratively)."""
    table = _lcs_table(x, y)
    i, j, out = len(x), len(y), []
    while i > 0 and j > 0:
        if x[i - 1] == y[j - 1]:
            out.append(x[i - 1])
            i, j = i - 1, j - 1
        elif table[i - 1][j] > table[i][j - 1]:
            i -= 1
        else:
            j -= 1
    return out[::-1]


def _rouge_sentences(text: str) -> list[str]:
    return [" ".join(part.split()) for part in text.split(".") if len(part) > 0]


def rouge_l(prediction: str, ground_truth: str) -> float:
    """Summary-level ROUGE-L F of the ``rouge`` package (pltrdy), which LongBench's ``rouge_score`` calls.

    Sentences are split on ``.``, words on single spaces; word counts and the union of LCS words are *sets*
    (the package's default ``exclusive=True``). Raises ``ValueError`` on an empty hypothesis or reference,
    as the package does.
    """
    hyp, ref = _rouge_sentences(prediction), _rouge_sentences(ground_truth)
    if not hyp or not ref:
        raise ValueError("Hypothesis or reference is empty.")
    ref_words = [w for s in ref for w in s.split(" ")]
    hyp_words = [w for s in hyp for w in s.split(" ")]
    m, n = len(set(ref_words)), len(set(hyp_words))
    union: set[str] = set()
    llcs = 0
    for ref_sentence in ref:
        before = len(union)
        r = ref_sentence.split(" ")
        for hyp_sentence in hyp:
            union |= set(_lcs_words(r, hyp_sentence.split(" ")))
        llcs += len(union) - before
    r_lcs, p_lcs = llcs / m, llcs / n
    return 2.0 * (p_lcs * r_lcs) / (p_lcs + r_lcs + 1e-8)


def rouge_score(prediction: str, ground_truth: str, **_) -> float:
    """LongBench's ``rouge_score``: ROUGE-L F, 0.0 when the ``rouge`` package would raise (empty text)."""
    try:
        return rouge_l(prediction, ground_truth)
    except (ValueError, ZeroDivisionError):
        return 0.0


def classification_score(prediction: str, ground_truth: str, all_classes: Sequence[str] = (), **_) -> float:
    """LongBench's classification score, including its quirk of removing from the list while iterating it."""
    matches = [c for c in all_classes if c in prediction]
    for term in matches:  # noqa: B020 -- the official scorer mutates the list it iterates; keep its results
        if term in ground_truth and term != ground_truth:
            matches.remove(term)
    return 1.0 / len(matches) if ground_truth in matches else 0.0


def retrieval_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the paragraph id in ``Paragraph N``."""
    found = re.findall(r"Paragraph (\d+)", ground_truth)
    if not found:
        raise ValueError(f"retrieval ground truth must look like 'Paragraph N', got {ground_truth!r}")
    numbers = re.findall(r"\d+", prediction)
    return 0.0 if not numbers else sum(1 for x in numbers if x == found[0]) / len(numbers)


def count_score(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction equal to the ground-truth count."""
    numbers = re.findall(r"\d+", prediction)
    return 0.0 if not numbers else sum(1 for x in numbers if x == str(ground_truth)) / len(numbers)


def fuzz_ratio(a: str, b: str) -> int:
    """``fuzzywuzzy.fuzz.ratio`` without python-Levenshtein: ``round(100 * difflib ratio)``; 100 for equal
    strings, 0 when one is empty."""
    if a == b:
        return 100
    if not a or not b:
        return 0
    return int(round(100 * difflib.SequenceMatcher(None, a, b).ratio()))


def code_sim_score(prediction: str, ground_truth: str, **_) -> float:
    """Similarity of the first prediction line that is not a comment / code fence with the reference line."""
    first = ""
    for line in prediction.lstrip("\n").split("\n"):
        if "`" not in line and "#" not in line and "//" not in line:
            first = line
            break
    return fuzz_ratio(first, ground_truth) / 100


LONGBENCH_METRICS: dict[str, Callable[..., float]] = {
    "narrativeqa": qa_f1_score,
    "qasper": qa_f1_score,
    "multifieldqa_en": qa_f1_score,
    "hotpotqa": qa_f1_score,
    "2wikimqa": qa_f1_score,
    "musique": qa_f1_score,
    "gov_report": rouge_score,
    "qmsum": rouge_score,
    "multi_news": rouge_score,
    "trec": classification_score,
    "triviaqa": qa_f1_score,
    "samsum": rouge_score,
    "passage_count": count_score,
    "passage_retrieval_en": retrieval_score,
    "lcc": code_sim_score,
    "repobench-p": code_sim_score,
}
FIRST_LINE_TASKS = ("trec", "triviaqa", "samsum", "lsht")


def longbench_score(task: str, prediction: str, answers: Sequence[str],
                    all_classes: Sequence[str] | None = None) -> float:
    """Score of one LongBench prediction: the best over all reference answers, in [0, 1]."""
    if task not in LONGBENCH_METRICS:
        raise ValueError(f"unknown LongBench task {task!r}; known: {', '.join(LONGBENCH_METRICS)}")
    if task in FIRST_LINE_TASKS:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = LONGBENCH_METRICS[task]
    score = 0.0
    for truth in answers:
        score = max(score, metric(prediction, truth, all_classes=list(all_classes or [])))
    return score


def longbench_length_bucket(length: int) -> str:
    """LongBench-E's length buckets (``length`` is the dataset's word count)."""
    return "0-4k" if length < 4000 else "4-8k" if length < 8000 else "8k+"


# --------------------------------------------------------------------------------------------------------------
# Dispatch used by the runner: every prediction row names its metric.


def score_prediction(metric: str, prediction: str, answers: Sequence[str], **kwargs) -> float:
    """Score one prediction with the named metric (``string_match_all``, ``string_match_part``, ``substring``,
    or ``longbench:<task>``)."""
    if metric == "string_match_all":
        return string_match_all(ruler_postprocess(prediction), answers)
    if metric == "string_match_part":
        return string_match_part(ruler_postprocess(prediction), answers)
    if metric == "substring":
        return max(substring_match(prediction, a) for a in answers)
    if metric.startswith("longbench:"):
        return longbench_score(metric.split(":", 1)[1], prediction, answers, kwargs.get("all_classes"))
    raise ValueError(f"unknown metric {metric!r}")
