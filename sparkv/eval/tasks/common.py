"""Pieces shared by the task generators: the sample record, prompt token counting, size fitting, sentences."""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

_PLACEHOLDER = "\x00SPARKV-CONTENT\x00"


@dataclass
class Sample:
    """One prompt to answer, split the way ``sparkv.generate`` takes it.

    The model sees ``context + question`` (wrapped in the chat template when ``chat_template``), then
    ``answer_prefix`` at the start of its reply.

    Attributes:
        task: task name (``niah_single_1``, ``hotpotqa``...).
        id: sample id, unique within the task.
        context: long text (the part a press compresses).
        question: text after the context (starts with its own separator).
        answers: reference answers.
        metric: metric name understood by :func:`sparkv.eval.metrics.score_prediction`.
        answer_prefix: text that starts the model's reply (RULER); empty for none.
        max_new_tokens: generation length.
        chat_template: whether the tokenizer's chat template wraps the prompt.
        stop_at_newline: stop generating at a newline, and forbid a newline or end of text as the first token
            (LongBench's samsum rule).
        meta: anything else worth keeping in the prediction row (length, depth, all_classes...).
    """

    task: str
    id: str
    context: str
    question: str
    answers: list[str]
    metric: str
    answer_prefix: str = ""
    max_new_tokens: int = 32
    chat_template: bool = True
    stop_at_newline: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PromptFormat:
    """Renders and counts prompts exactly as they are fed to the model.

    ``chat_template`` (per call) wraps ``context + question`` as one user turn with the generation prompt
    (``add_special_tokens=False`` afterwards, as ``apply_chat_template(tokenize=True)`` does); otherwise the raw
    text is tokenised with the tokenizer's special tokens (BOS). The answer prefix follows the generation prompt;
    when ``prefix_in_reply`` is False (a generation API without an answer prefix) it ends the user turn instead.
    """

    def __init__(self, tokenizer: Any, prefix_in_reply: bool = True):
        self.tokenizer = tokenizer
        self.prefix_in_reply = prefix_in_reply
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        self._wrap: tuple[str, str] | None = None
        if self.has_chat_template:
            rendered = self._render_chat(_PLACEHOLDER)
            if rendered.count(_PLACEHOLDER) == 1:
                pre, post = rendered.split(_PLACEHOLDER)
                if self._render_chat("probe text") == pre + "probe text" + post:
                    self._wrap = (pre, post)

    def _render_chat(self, content: str) -> str:
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )

    def uses_chat(self, chat_template: bool) -> bool:
        return chat_template and self.has_chat_template

    def render(self, context: str, question: str, answer_prefix: str = "", chat_template: bool = True) -> str:
        """The prompt text (before tokenisation)."""
        if not self.uses_chat(chat_template):
            return context + question + answer_prefix
        content = context + question + ("" if self.prefix_in_reply else answer_prefix)
        wrapped = self._wrap[0] + content + self._wrap[1] if self._wrap else self._render_chat(content)
        return wrapped + (answer_prefix if self.prefix_in_reply else "")

    def encode(self, text: str, special_tokens: bool) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    def count(self, context: str, question: str, answer_prefix: str = "", chat_template: bool = True) -> int:
        """Number of prompt tokens the model receives."""
        text = self.render(context, question, answer_prefix, chat_template)
        return len(self.encode(text, special_tokens=not self.uses_chat(chat_template)))

    def count_sample(self, sample: Sample) -> int:
        return self.count(sample.context, sample.question, sample.answer_prefix, sample.chat_template)

    def count_text(self, text: str) -> int:
        """Tokens of a bare text (no special tokens, no template)."""
        return len(self.encode(text, special_tokens=False))


def fit_units(
    tokens_for: Callable[[int], int], budget: int, start: int = 16, lo: int = 1, cap: int | None = None
) -> tuple[int, int]:
    """Largest unit count ``n`` in ``[lo, cap]`` with ``tokens_for(n) <= budget``; returns ``(n, tokens)``.

    ``tokens_for`` is assumed non-decreasing (more haystack never means fewer tokens). Gallops from ``start``
    (e.g. the previous sample's answer) then bisects, so repeated fits cost a few tokenisations.
    Raises ``ValueError`` when even ``lo`` units exceed the budget.
    """
    cache: dict[int, int] = {}

    def f(n: int) -> int:
        if n not in cache:
            cache[n] = tokens_for(n)
        return cache[n]

    if f(lo) > budget:
        raise ValueError(f"{f(lo)} tokens with the smallest haystack already exceed the budget of {budget}")
    n = min(max(start, lo), cap) if cap is not None else max(start, lo)
    if f(n) <= budget:
        good, step = n, max(1, n // 8)
        bad = None
        while bad is None:
            nxt = good + step if cap is None else min(good + step, cap)
            if nxt == good:  # reached the cap
                return good, f(good)
            if f(nxt) <= budget:
                good, step = nxt, step * 2
            else:
                bad = nxt
    else:
        bad, step = n, max(1, n // 8)
        good = None
        while good is None:
            nxt = max(bad - step, lo)
            if f(nxt) <= budget:
                good = nxt
            else:
                bad, step = nxt, step * 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if f(mid) <= budget:
            good = mid
        else:
            bad = mid
    return good, f(good)


# A sentence ends at ``.``/``!``/``?`` (+ closing quotes/brackets) followed by whitespace, or at a CJK full stop,
# exclamation or question mark (+ closing quotes), which needs no whitespace after it.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?<=[。！？])[」』”’）)\"']*\s*")
_SPACE_RUN = re.compile(r"\s+")
_SENTENCE_MARK = re.compile(r"[.!?。！？]")
# Text with no sentence ends for this many characters (no punctuation, a list, a log) is cut every FILL_CHARS, at
# the nearest whitespace (or anywhere, for text without spaces such as CJK), so that a needle can still be placed
# near any depth. Ordinary prose never has such gaps (the Paul Graham essays' longest is 890 characters).
LONG_SENTENCE_CHARS = 1000
FILL_CHARS = 100


def sentence_boundaries(text: str) -> list[int]:
    """Character offsets where a sentence may start: 0, after each sentence end (``.``/``!``/``?`` + closing quotes
    + whitespace, or ``。``/``！``/``？``), and ``len(text)``; stretches of more than ``LONG_SENTENCE_CHARS`` with
    no sentence end get a cut every ``FILL_CHARS`` or so (a whole text without any sentence mark: every 1/20 of it,
    at most ``FILL_CHARS``), at whitespace where the text has any. A light stand-in for NLTK's
    ``sent_tokenize``."""
    ends = sorted({0, len(text), *(m.end() for m in _SENTENCE_END.finditer(text))})
    cuts = set(ends)
    # A text with no sentence-ending mark at all is one long stretch however short it is: cut it into ~20 pieces.
    unpunctuated = _SENTENCE_MARK.search(text) is None
    for a, b in zip(ends[:-1], ends[1:]):
        if b - a <= (1 if unpunctuated else LONG_SENTENCE_CHARS):
            continue
        step = min(FILL_CHARS, max(1, (b - a) // 20)) if unpunctuated else FILL_CHARS
        # Cut at the whitespace nearest each step (never inside a word), or anywhere in text without spaces.
        spaces = [m.end() for m in _SPACE_RUN.finditer(text, a, b) if a < m.end() < b]
        for target in range(a + step, b - step // 2, step):
            i = bisect.bisect_left(spaces, target)
            near = spaces[max(i - 1, 0):i + 1]
            cuts.add(min(near, key=lambda c: abs(c - target)) if near else target)
    return sorted(cuts)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (stripped, non-empty), cut at :func:`sentence_boundaries`."""
    cuts = sentence_boundaries(text)
    parts = [text[a:b].strip() for a, b in zip(cuts[:-1], cuts[1:])]
    return [p for p in parts if p]


def split_template(template: str, answer_prefix: str, **fields: Any) -> tuple[str, str, str]:
    """Format a ``{context}`` template and split it into (text before and including the context, the rest,
    the answer prefix). ``fields['context']`` is inserted verbatim (braces in it are safe)."""
    context = fields.pop("context")
    head, tail = template.split("{context}")
    return head.format(**fields) + context, tail.format(**fields), answer_prefix.format(**fields)


def num_label(x: float) -> str:
    """Shortest text that tells distinct numbers apart, for sample ids and press labels: ``0.5``, ``1``,
    ``0.1234561`` (``{:g}`` kept 6 digits, so 0.1234561 and 0.1234564 gave one id)."""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)
