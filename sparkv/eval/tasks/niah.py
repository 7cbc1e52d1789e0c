"""Needle in a haystack over a grid of context lengths x needle depths, with a user-chosen needle.

A sample of length ``L`` and depth ``d`` has a context (haystack with the needle inserted) of exactly ``L`` tokens
of the model's tokenizer, counted on the context alone (no special tokens, no template). The needle goes in at
the sentence boundary of the truncated haystack nearest to the fraction ``d`` of it (0: first, 1: last). The
question follows the context; the score is 1 when the answer appears in the reply (ignoring case).
"""

from __future__ import annotations

import bisect
import logging
from typing import Any, Callable, Iterator

from sparkv.eval.tasks.common import PromptFormat, Sample, num_label, sentence_boundaries

DEFAULT_NEEDLE = (
    "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
)
DEFAULT_QUESTION = "What is the best thing to do in San Francisco?"
DEFAULT_ANSWER = "eat a sandwich and sit in Dolores Park"
log = logging.getLogger(__name__)

QUESTION_TEMPLATE = "\n\nAnswer the question using the text above.\nQuestion: {question}\nAnswer:"


class HaystackTokens:
    """A haystack tokenised once, repeated as needed to reach any length."""

    def __init__(self, fmt: PromptFormat, text: str):
        self.fmt = fmt
        self.text = text.strip()
        if not self.text:
            raise ValueError("the haystack is empty")
        self.ids = fmt.encode(self.text, special_tokens=False)
        if not self.ids:
            raise ValueError("the haystack tokenises to nothing")

    def prefix(self, n: int) -> str:
        """Text of the first ``n`` haystack tokens (the haystack repeated, blank-line separated, if shorter)."""
        text, ids = self.text, self.ids
        while len(ids) < n:
            text = text + "\n\n" + self.text
            ids = self.fmt.encode(text, special_tokens=False)
            self.text, self.ids = text, ids
        # A cut inside a multi-byte character decodes to U+FFFD: leave the partial character out.
        return self.fmt.tokenizer.decode(ids[:n], skip_special_tokens=True).rstrip("\ufffd")


def insert_needle(haystack: str, needle: str, depth: float) -> tuple[str, float]:
    """Insert ``needle`` at the sentence boundary of ``haystack`` nearest to ``depth`` (a fraction of its
    characters); returns the context and the boundary's actual depth (as a fraction of characters)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if not needle.strip():
        return haystack, depth
    cuts = sentence_boundaries(haystack)
    target = depth * len(haystack)
    i = bisect.bisect_left(cuts, target)
    candidates = [c for c in (cuts[max(i - 1, 0)], cuts[min(i, len(cuts) - 1)])]
    cut = min(candidates, key=lambda c: (abs(c - target), c))
    before, after = haystack[:cut].rstrip(), haystack[cut:].lstrip()
    parts = [p for p in (before, needle.strip(), after) if p]
    actual = cut / len(haystack) if haystack else 0.0
    return " ".join(parts), actual


def build_context(tokenizer: Any, haystack: str, needle: str, length: int, depth: float = 0.5) -> str:
    """Haystack text with ``needle`` inserted near ``depth``, exactly ``length`` tokens of ``tokenizer`` long
    (counted without special tokens). An empty needle gives plain haystack of that length."""
    return fit_context(HaystackTokens(PromptFormat(tokenizer), haystack), needle, depth, length)[0]


def fit_context(hay: HaystackTokens, needle: str, depth: float, length: int) -> tuple[str, float, int]:
    """Context of exactly ``length`` tokens (or the closest reachable, returned as the third value), with the
    depth actually used (fraction of haystack characters before the needle).

    Starts from ``length - tokens(needle)`` haystack tokens and corrects the haystack size by the measured error
    (boundary merges make the count drift by a token or two), then trims characters at the end if a token
    count is skipped."""
    fmt = hay.fmt
    needle_tokens = fmt.count_text(" " + needle.strip()) if needle.strip() else 0
    if needle_tokens >= length:
        raise ValueError(f"the needle alone has {needle_tokens} tokens; length {length} is too short")

    def make(n: int) -> tuple[str, float, int]:
        context, actual = insert_needle(hay.prefix(n), needle, depth)
        return context, actual, fmt.count_text(context)

    n = length - needle_tokens
    seen: dict[int, tuple[str, float, int]] = {}
    for _ in range(12):
        if n in seen:
            break
        seen[n] = make(n)
        error = length - seen[n][2]
        if error == 0:
            return seen[n]
        n = max(1, n + error)
    # Skipped count: shorten the smallest too-long context one character at a time (at its end, or just before
    # the needle when the needle is last).
    over = sorted((v for v in seen.values() if v[2] > length), key=lambda v: v[2])
    if over:
        context, actual, _ = over[0]
        core = needle.strip()
        for _ in range(64):
            if core and context.endswith(core):
                head = context[: -len(core)].rstrip()
                if not head:
                    break
                context = head[:-1].rstrip() + " " + core
            else:
                context = context[:-1]
            count = fmt.count_text(context)
            if count == length:
                return context, actual, count
            if count < length:
                break
    best = min(seen.values(), key=lambda v: (abs(v[2] - length), -v[2]))
    return best


def check_needle_test(needle: str, question: str, answer: str, haystack_text: str | None = None) -> None:
    """Refuse a needle test whose score could not tell retrieval from its absence. The metric looks for the answer in
    the reply (ignoring case), so the answer must occur in the needle (else every sample scores 0) and nowhere else
    the model sees: not in the question (a reply that repeats the question would score 1) and not in the haystack
    (a cut of it could state the answer without the needle). ``ValueError`` says which."""
    if not needle.strip() or not question.strip() or not answer.strip():
        raise ValueError("needle, question and answer must be non-empty")
    found = answer.strip().lower()
    if found not in needle.lower():
        raise ValueError(f"answer {answer.strip()!r} does not occur in the needle {needle.strip()!r}: every sample "
                         "would score 0 (the metric checks that the prediction contains the answer)")
    if found in question.lower():
        raise ValueError(f"answer {answer.strip()!r} occurs in the question {question.strip()!r}: a reply that only "
                         "repeats the question would count as found; pick an answer that only the needle states")
    if haystack_text is not None and found in haystack_text.lower():
        raise ValueError(f"answer {answer.strip()!r} occurs in the haystack text itself: a reply could contain it "
                         "without the needle having been retrieved; pick an answer that the haystack does not "
                         "contain")


def generate_niah(
    fmt: PromptFormat,
    haystack_text: str,
    lengths: list[int],
    depths: list[float],
    needle: str = DEFAULT_NEEDLE,
    question: str = DEFAULT_QUESTION,
    answer: str = DEFAULT_ANSWER,
    max_new_tokens: int = 32,
    chat_template: bool = True,
) -> Iterator[tuple[str, Callable[[], Sample]]]:
    """Yield ``(sample_id, make)`` for every (length, depth) cell, lengths outermost (the test is checked first:
    :func:`check_needle_test`)."""
    check_needle_test(needle, question, answer, haystack_text)
    hay: HaystackTokens | None = None

    def make(length: int, depth: float) -> Sample:
        nonlocal hay
        if hay is None:
            hay = HaystackTokens(fmt, haystack_text)
        context, actual, tokens = fit_context(hay, needle, depth, length)
        if tokens != length:
            log.warning("niah L%d-D%g: the context has %d tokens, not %d (no cut of this haystack gives exactly %d; "
                        "recorded as context_tokens_exact)", length, depth, tokens, length, length)
        return Sample(
            task="niah",
            id=f"L{length}-D{num_label(depth)}",
            context=context,
            question=QUESTION_TEMPLATE.format(question=question.strip()),
            answers=[answer.strip()],
            metric="substring",
            max_new_tokens=max_new_tokens,
            chat_template=chat_template,
            meta={
                "length": length,
                "depth": depth,
                "actual_depth": round(actual, 4),
                "context_tokens_exact": tokens,
                "prompt_tokens": fmt.count(context, QUESTION_TEMPLATE.format(question=question.strip()), "",
                                           chat_template),
                "answer_in_needle": answer.strip().lower() in needle.lower(),
            },
        )

    for length in lengths:
        for depth in depths:
            yield f"L{length}-D{num_label(depth)}", (lambda length=length, depth=depth: make(length, depth))
