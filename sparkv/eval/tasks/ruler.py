"""RULER's synthetic tasks, generated offline at exact token lengths of the model's tokenizer.

Restated from RULER (Hsieh et al., 2024; NVIDIA/RULER ``scripts/data/synthetic``): the same templates, answer
prefixes, needle formats (7-digit numbers, adjective-noun words, UUIDs), haystacks (the repeated noise
"The grass is green...", essays, or distractor needles), variable-tracking chains with a short in-context example,
common-words lists with an example, and Zipf-distributed coded words; scored with ``string_match_all``.

Length: a sample of length ``L`` holds the largest haystack whose prompt, as the model receives it (chat template
and answer prefix included, counted with the model's own tokenizer), plus the task's generation length fits in
``L`` tokens -- RULER's definition of ``max_seq_length``. The haystack size is found by bisection on real token
counts for every sample.

Differences from RULER, all deliberate:
- sentences of the essay haystack are cut by a regular expression instead of NLTK's ``sent_tokenize``;
- the essay haystack is repeated when a length needs more text than the haystack holds (RULER stops growing);
- distractor needles never reuse a real key or a real value, so each answer appears exactly once;
- FWE keeps its generation length inside ``L`` like the other tasks; each sample draws its own randomness from
  ``(seed, task, length, index)`` so any sample can be regenerated alone (resumable runs).
The QA tasks (qa_1, qa_2) need SQuAD / HotpotQA files and are not generated.
"""

from __future__ import annotations

import math
import random
import re
import string
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterator

from sparkv.eval.tasks.common import PromptFormat, Sample, fit_units, split_sentences, split_template

NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
# RULER samples needle depths from 40 evenly spaced percentages.
DEPTHS = [round(i * 100 / 39) for i in range(40)]

TEMPLATES: dict[str, dict[str, Any]] = {
    "niah": {
        "tokens_to_generate": 128,
        "template": (
            "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
            "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
            "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
        ),
        "answer_prefix": " The special magic {type_needle_v} for {query} mentioned in the provided text are",
    },
    "variable_tracking": {
        "tokens_to_generate": 30,
        "template": (
            "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
            "Question: Find all variables that are assigned the value {query} in the text above."
        ),
        # "assgined" is RULER's spelling; kept so prompts match the published ones.
        "answer_prefix": (
            " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
            "assgined the value {query}, they are: "
        ),
    },
    "common_words_extraction": {
        "tokens_to_generate": 120,
        "template": (
            "Below is a numbered list of words. In these words, some appear more often than others. "
            "Memorize the ones that appear most often.\n{context}\n"
            "Question: What are the 10 most common words in the above list?"
        ),
        "answer_prefix": " Answer: The top 10 words that appear most often in the list are:",
    },
    "freq_words_extraction": {
        "tokens_to_generate": 50,
        "template": (
            "Read the following coded text and track the frequency of each coded word. Find the three most "
            "frequently appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore "
            "the dots '....'. What are the three most frequently appeared words in the above coded text?"
        ),
        "answer_prefix": " Answer: According to the coded text above, the three most frequently appeared words are:",
    },
}


@dataclass(frozen=True)
class RulerTask:
    """One RULER task: its family (``niah``, ``variable_tracking``...) and that family's arguments."""

    family: str
    args: dict[str, Any] = field(default_factory=dict)
    metric: str = "string_match_all"

    @property
    def tokens_to_generate(self) -> int:
        return TEMPLATES[self.family]["tokens_to_generate"]


def _niah(haystack: str, k: str, v: str, nk: int = 1, nv: int = 1, nq: int = 1) -> RulerTask:
    return RulerTask("niah", dict(type_haystack=haystack, type_needle_k=k, type_needle_v=v,
                                  num_needle_k=nk, num_needle_v=nv, num_needle_q=nq))


RULER_TASKS: dict[str, RulerTask] = {
    "niah_single_1": _niah("repeat", "words", "numbers"),
    "niah_single_2": _niah("essay", "words", "numbers"),
    "niah_single_3": _niah("essay", "words", "uuids"),
    "niah_multikey_1": _niah("essay", "words", "numbers", nk=4),
    "niah_multikey_2": _niah("needle", "words", "numbers"),
    "niah_multikey_3": _niah("needle", "uuids", "uuids"),
    "niah_multivalue": _niah("essay", "words", "numbers", nv=4),
    "niah_multiquery": _niah("essay", "words", "numbers", nq=4),
    "vt": RulerTask("variable_tracking", dict(num_chains=1, num_hops=4)),
    "cwe": RulerTask("common_words_extraction", dict(freq_cw=30, freq_ucw=3, num_cw=10)),
    "fwe": RulerTask("freq_words_extraction", dict(alpha=2.0, coded_wordlen=6)),
}
RULER_TASK_NAMES = tuple(RULER_TASKS)


# ----------------------------------------------------------------------------------------------------------------
# Word lists (RULER draws them from the `wonderwords` package)


@lru_cache(maxsize=1)
def word_lists() -> dict[str, list[str]]:
    """``nouns``, ``adjectives`` and ``verbs`` of the ``wonderwords`` package (sorted, unique)."""
    try:
        from importlib.resources import files

        import wonderwords  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "RULER's word needles and common-words task need the word lists of the PyPI package wonderwords: "
            "`pip install wonderwords`"
        ) from exc
    assets = files("wonderwords") / "assets"
    out = {}
    for name, file in (("nouns", "nounlist.txt"), ("adjectives", "adjectivelist.txt"), ("verbs", "verblist.txt")):
        words = (assets / file).read_text(encoding="utf-8").splitlines()
        out[name] = sorted({w.strip() for w in words if w.strip()})
    return out


def _random_value(rng: random.Random, kind: str) -> str:
    if kind == "numbers":
        return str(rng.randint(10**6, 10**7 - 1))
    if kind == "words":
        lists = word_lists()
        return f"{rng.choice(lists['adjectives'])}-{rng.choice(lists['nouns'])}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"needle type must be numbers, words or uuids; got {kind!r}")


def _join_query(queries: list[str]) -> str:
    return queries[0] if len(queries) == 1 else ", ".join(queries[:-1]) + ", and " + queries[-1]


# ----------------------------------------------------------------------------------------------------------------
# Builders: (sample randomness, haystack units) -> (context, question, answer_prefix, answers)

Built = tuple[str, str, str, list[str]]


class _Builders:
    def __init__(self, essay_words: list[str], length: int):
        self.essay_words = essay_words
        self.length = length

    def essay(self, n: int) -> str:
        units = self.essay_words  # each carries its own separator (essay_words)
        if n <= len(units):
            return "".join(units[:n]).strip()
        return "".join(units[i % len(units)] for i in range(n)).strip()

    # -- NIAH ------------------------------------------------------------------------------------------------------
    def niah(self, seed: str, n: int, args: dict[str, Any]) -> Built:
        rng = random.Random(seed)
        kind_k, kind_v = args["type_needle_k"], args["type_needle_v"]
        n_q = args["num_needle_q"]
        n_k = max(args["num_needle_k"], n_q)
        keys: list[str] = []
        values: list[list[str]] = []
        needles: list[str] = []
        for _ in range(n_k):
            key = _random_value(rng, kind_k)
            while key in keys:
                key = _random_value(rng, kind_k)
            keys.append(key)
            vals = []
            for _ in range(args["num_needle_v"]):
                vals.append(_random_value(rng, kind_v))
                needles.append(NEEDLE.format(type_needle_v=kind_v, key=key, value=vals[-1]))
            values.append(vals)
        rng.shuffle(needles)
        queried = rng.sample(range(n_k), n_q)
        queries = [keys[i] for i in queried]
        answers = [a for i in queried for a in values[i]]

        place = random.Random(seed + "/place")
        haystack = args["type_haystack"]
        if haystack == "essay":
            sentences = split_sentences(self.essay(n))
            depths = sorted(place.sample(DEPTHS, len(needles)))
            cuts = [0] + [int(len(sentences) * d / 100) for d in depths] + [len(sentences)]
            pieces: list[str] = []
            for i in range(1, len(cuts)):
                pieces.append(" ".join(sentences[cuts[i - 1] : cuts[i]]))
                if i - 1 < len(needles):
                    pieces.append(needles[i - 1])
            context = " ".join(p for p in pieces if p)
        else:
            if haystack == "repeat":
                lines = [NOISE] * n
            elif haystack == "needle":
                distract = random.Random(seed + "/distractors")
                lines = []
                for _ in range(n):
                    key = _random_value(distract, kind_k)
                    while key in keys:
                        key = _random_value(distract, kind_k)
                    value = _random_value(distract, kind_v)
                    while value in answers:
                        value = _random_value(distract, kind_v)
                    lines.append(NEEDLE.format(type_needle_v=kind_v, key=key, value=value))
            else:
                raise ValueError(f"type_haystack must be essay, repeat or needle; got {haystack!r}")
            for index, needle in zip(sorted(place.sample(range(max(n, len(needles))), len(needles)), reverse=True),
                                     needles):
                lines.insert(index, needle)
            context = "\n".join(lines)

        template, prefix = TEMPLATES["niah"]["template"], TEMPLATES["niah"]["answer_prefix"]
        type_v = kind_v
        if n_q * args["num_needle_v"] == 1:
            # RULER's singular rewrite (applied to template and answer prefix alike).
            for old, new in (("Some", "A"), ("are all", "is"), ("are", "is"), ("answers", "answer")):
                template, prefix = template.replace(old, new), prefix.replace(old, new)
            type_v = kind_v[:-1]
        ctx, question, answer_prefix = split_template(
            template, prefix, context=context, type_needle_v=type_v, query=_join_query(queries)
        )
        return ctx, question, answer_prefix, answers

    # -- Variable tracking -----------------------------------------------------------------------------------------
    @staticmethod
    def _chains(rng: random.Random, num_chains: int, num_hops: int,
                letters: int) -> tuple[list[list[str]], list[list[str]]]:
        names: list[str] = []
        while len(names) < (num_hops + 1) * num_chains:
            name = "".join(rng.choices(string.ascii_uppercase, k=letters))
            if name not in names:
                names.append(name)
        variables, chains = [], []
        for i in range(0, len(names), num_hops + 1):
            these = names[i : i + num_hops + 1]
            variables.append(these)
            chain = [f"VAR {these[0]} = {rng.randint(10000, 99999)}"]
            chain += [f"VAR {these[j + 1]} = VAR {these[j]} " for j in range(num_hops)]
            chains.append(chain)
        return variables, chains

    def _vt_text(self, seed: str, n: int, num_chains: int, num_hops: int, letters: int) -> Built:
        rng = random.Random(seed)
        variables, chains = self._chains(rng, num_chains, num_hops, letters)
        sentences = [NOISE + "\n"] * n
        place = random.Random(seed + "/place")
        for chain in chains:
            slots = sorted(place.sample(range(max(len(sentences), len(chain))), len(chain)))
            for j, (slot, statement) in enumerate(zip(slots, chain)):
                sentences.insert(slot + j, statement)
        context = " ".join(sentences).replace(". \n", ".\n")
        value = chains[0][0].split("=")[-1].strip()
        t = TEMPLATES["variable_tracking"]
        ctx, question, prefix = split_template(t["template"], t["answer_prefix"], context=context, query=value,
                                               num_v=num_hops + 1)
        return ctx, question, prefix, variables[0]

    def vt(self, seed: str, n: int, args: dict[str, Any], icl: str) -> Built:
        ctx, question, prefix, answers = self._vt_text(seed, n, args["num_chains"], args["num_hops"], 5)
        return icl + ctx, question, prefix, answers

    def vt_example(self, seed: str, args: dict[str, Any], count_text: Callable[[str], int]) -> str:
        """RULER's in-context example: a 3-letter-variable instance fitted to 500 tokens (30 for its answer)."""
        hops = min(10, args["num_hops"])

        def text(n: int) -> str:
            ctx, question, prefix, answers = self._vt_text(seed + "/icl", n, args["num_chains"], hops, 3)
            return ctx + question + prefix + " " + " ".join(answers)

        n, _ = fit_units(lambda n: count_text(text(n)), 500 - TEMPLATES["variable_tracking"]["tokens_to_generate"],
                         start=5)
        return text(n) + "\n\n" + "\n\n"

    # -- Common words ----------------------------------------------------------------------------------------------
    def cwe(self, seed: str, n: int, args: dict[str, Any]) -> Built:
        lists = word_lists()
        vocabulary = sorted(set(lists["nouns"] + lists["adjectives"] + lists["verbs"]))
        rng = random.Random(seed)
        rng.shuffle(vocabulary)
        n = min(n, len(vocabulary))
        num_cw = args["num_cw"]
        if self.length < 4096:
            example_shape, repeats = (20, 3, 1), (6, 1)
        else:
            example_shape, repeats = (40, 10, 3), (args["freq_cw"], args["freq_ucw"])

        def example(r: random.Random, num_words: int, common_repeats: int,
                    uncommon_repeats: int) -> tuple[str, list[str]]:
            chosen = r.sample(vocabulary, num_words)
            common, uncommon = chosen[:num_cw], chosen[num_cw:]
            listed = common * common_repeats + uncommon * uncommon_repeats
            r.shuffle(listed)
            return " ".join(f"{i + 1}. {w}" for i, w in enumerate(listed)), common

        t = TEMPLATES["common_words_extraction"]
        ex_ctx, ex_answers = example(random.Random(seed + "/icl"), *example_shape)
        ex_head, ex_question, ex_prefix = split_template(t["template"], t["answer_prefix"], context=ex_ctx)
        shot = ex_head + ex_question + ex_prefix + " ".join(f"{i + 1}. {w}" for i, w in enumerate(ex_answers))
        ctx, answers = example(random.Random(seed + "/main"), max(n, num_cw), *repeats)
        head, question, prefix = split_template(t["template"], t["answer_prefix"], context=ctx)
        return shot + "\n" + head, question, prefix, answers

    # -- Frequent words --------------------------------------------------------------------------------------------
    def fwe_vocabulary(self, seed: str, args: dict[str, Any]) -> list[str]:
        rng = random.Random(seed)
        size = max(self.length // 50, 8)
        wordlen = args["coded_wordlen"]
        vocab: set[str] = set()
        while len(vocab) < size:
            vocab.add("".join(rng.choices(string.ascii_lowercase, k=wordlen)))
        ordered = sorted(vocab)
        rng.shuffle(ordered)
        ordered[0] = "..."  # the most frequent "word" is noise, as in RULER
        return ordered

    def fwe(self, seed: str, n: int, args: dict[str, Any], vocab: list[str]) -> Built:
        alpha = args["alpha"]
        z = _zeta(alpha)
        words: list[str] = []
        for k, w in enumerate(vocab, start=1):
            words += [w] * int(n * k ** (-alpha) / z)
        random.Random(seed + "/shuffle").shuffle(words)
        t = TEMPLATES["freq_words_extraction"]
        ctx, question, prefix = split_template(t["template"], t["answer_prefix"], context=" ".join(words))
        return ctx, question, prefix, vocab[1:4]


def _zeta(alpha: float, terms: int = 10_000) -> float:
    """Riemann zeta for alpha > 1 (partial sum plus the Euler-Maclaurin tail)."""
    if alpha <= 1:
        raise ValueError(f"alpha must be > 1, got {alpha}")
    partial = math.fsum(k ** (-alpha) for k in range(1, terms))
    return partial + terms ** (1 - alpha) / (alpha - 1) + 0.5 * terms ** (-alpha)


# Above this many characters per whitespace-separated run, a text is taken as written without spaces between words.
UNSPACED_CHARS_PER_WORD = 20


def essay_words(haystack_text: str) -> list[str]:
    """RULER's essay haystack units, each with the separator that follows it (the haystack is their concatenation):
    whitespace-separated words, as RULER counts them; for text written without spaces between words (Chinese,
    Japanese, Thai...: more than ``UNSPACED_CHARS_PER_WORD`` characters per whitespace-separated run) single
    characters, so that the haystack can still be sized to the token budget."""
    text = re.sub(r"\s+", " ", haystack_text).strip()
    if not text:
        raise ValueError("the haystack text is empty")
    words = text.split(" ")
    if len(text) / len(words) > UNSPACED_CHARS_PER_WORD:
        return list(text)
    return [w + " " for w in words]


def generate_ruler(
    task: str,
    length: int,
    num_samples: int,
    fmt: PromptFormat,
    haystack_text: str,
    seed: int = 42,
    chat_template: bool = True,
    max_new_tokens: int | None = None,
) -> Iterator[tuple[str, Callable[[], Sample]]]:
    """Yield ``(sample_id, make)`` for ``num_samples`` samples of ``task`` at ``length`` tokens.

    ``make()`` builds the sample (fitting its haystack to the length); ids are known without building, so a
    resumed run skips finished samples for free. ``max_new_tokens`` overrides RULER's generation length (the
    length budget always reserves RULER's own value, so prompts do not change with it).
    """
    if task not in RULER_TASKS:
        raise ValueError(f"unknown RULER task {task!r}; known: {', '.join(RULER_TASKS)}")
    spec = RULER_TASKS[task]
    builders = _Builders(essay_words(haystack_text) if spec.args.get("type_haystack") == "essay" else [], length)
    budget = length - spec.tokens_to_generate
    if budget <= 0:
        raise ValueError(f"length {length} leaves no room for {task}'s {spec.tokens_to_generate} generated tokens")
    state = {"start": 16}

    def count(built: Built) -> int:
        ctx, question, prefix, _ = built
        return fmt.count(ctx, question, prefix, chat_template)

    def make_one(index: int) -> Sample:
        seed_str = f"{seed}/{task}/{length}/{index}"
        if spec.family == "niah":
            build = lambda n: builders.niah(seed_str, n, spec.args)  # noqa: E731
            cap = None
        elif spec.family == "variable_tracking":
            icl = builders.vt_example(seed_str, spec.args, fmt.count_text)
            build = lambda n: builders.vt(seed_str, n, spec.args, icl)  # noqa: E731
            cap = None
        elif spec.family == "common_words_extraction":
            build = lambda n: builders.cwe(seed_str, n, spec.args)  # noqa: E731
            lists = word_lists()
            cap = len(set(lists["nouns"] + lists["adjectives"] + lists["verbs"]))
        else:
            vocab = builders.fwe_vocabulary(seed_str, spec.args)
            build = lambda n: builders.fwe(seed_str, n, spec.args, vocab)  # noqa: E731
            cap = None
        try:
            n, tokens = fit_units(lambda n: count(build(n)), budget, start=state["start"], lo=1, cap=cap)
        except ValueError as exc:
            raise ValueError(f"RULER task {task} cannot fit in {length} tokens: {exc}") from exc
        state["start"] = n
        ctx, question, prefix, answers = build(n)
        return Sample(
            task=task,
            id=f"{length}-{index}",
            context=ctx,
            question=question,
            answers=list(answers),
            metric=spec.metric,
            answer_prefix=prefix,
            max_new_tokens=max_new_tokens or spec.tokens_to_generate,
            chat_template=chat_template,
            meta={"length": length, "index": index, "prompt_tokens": tokens, "haystack_units": n},
        )

    for index in range(num_samples):
        yield f"{length}-{index}", (lambda index=index: make_one(index))
