"""RULER generators: lengths fitted on real token counts, determinism, needles once, answers recoverable."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from sparkv.eval.tasks.common import fit_units
from sparkv.eval.tasks.ruler import RULER_TASKS, TEMPLATES, generate_ruler

NIAH_TASKS = [t for t, spec in RULER_TASKS.items() if spec.family == "niah"]
NEEDLE_RE = re.compile(r"One of the special magic (?:numbers|words|uuids) for (\S+) is: (\S+)\.")


def make(task, length, fmt, haystack, n=2, seed=7, **kw):
    return [m() for _, m in generate_ruler(task, length, n, fmt, haystack, seed=seed, **kw)]


@pytest.mark.parametrize("task", list(RULER_TASKS))
def test_prompt_fits_length_tightly(task, fmt, haystack_text):
    length = 1500
    ttg = RULER_TASKS[task].tokens_to_generate
    for s in make(task, length, fmt, haystack_text):
        counted = fmt.count(s.context, s.question, s.answer_prefix, True)
        assert counted == s.meta["prompt_tokens"]
        assert counted + ttg <= length
        # the largest haystack that fits: one more unit would overflow, so the gap is below one unit's size
        assert length - (counted + ttg) < 80, (task, counted)
        assert s.max_new_tokens == ttg and s.metric == "string_match_all"


def test_largest_fit_is_maximal(fmt, haystack_text):
    """Growing the fitted haystack by one unit must overflow (checked through the builder)."""
    from sparkv.eval.tasks.ruler import _Builders, essay_words

    spec = RULER_TASKS["niah_single_2"]
    s = make("niah_single_2", 1200, fmt, haystack_text, n=1)[0]
    b = _Builders(essay_words(haystack_text), 1200)
    seed = "7/niah_single_2/1200/0"
    n = s.meta["haystack_units"]
    ctx, q, p, _ = b.niah(seed, n, spec.args)
    assert ctx == s.context
    ctx2, q2, p2, _ = b.niah(seed, n + 1, spec.args)
    assert fmt.count(ctx2, q2, p2) + spec.tokens_to_generate > 1200


def test_deterministic_under_seed(fmt, haystack_text):
    for task in ("niah_multikey_3", "vt", "cwe", "fwe", "niah_multivalue"):
        a = make(task, 1100, fmt, haystack_text, seed=3)
        b = make(task, 1100, fmt, haystack_text, seed=3)
        c = make(task, 1100, fmt, haystack_text, seed=4)
        assert [x.to_dict() for x in a] == [x.to_dict() for x in b]
        assert a[0].context != c[0].context
        assert a[0].context != a[1].context  # samples differ from each other


@pytest.mark.parametrize("task", NIAH_TASKS)
def test_niah_needles_once_and_answers_recoverable(task, fmt, haystack_text):
    spec = RULER_TASKS[task].args
    for s in make(task, 1400, fmt, haystack_text, n=3):
        pairs = NEEDLE_RE.findall(s.context)
        keys_in_question = [k for k in {k for k, _ in pairs} if k in s.question]
        assert len(keys_in_question) == spec["num_needle_q"]
        recovered = [v for k, v in pairs if k in keys_in_question]
        assert sorted(recovered) == sorted(s.answers)
        assert len(s.answers) == spec["num_needle_q"] * spec["num_needle_v"]
        for answer in s.answers:
            assert s.context.count(answer) == 1, answer
        for key in keys_in_question:
            assert sum(1 for k, _ in pairs if k == key) == spec["num_needle_v"]
        if spec["type_haystack"] == "repeat":
            assert "The grass is green. The sky is blue." in s.context
        if spec["type_haystack"] == "needle":
            assert len(pairs) > 10  # distractor needles make the haystack


def test_niah_singular_and_plural_templates(fmt, haystack_text):
    single = make("niah_single_1", 800, fmt, haystack_text, n=1)[0]
    assert single.context.startswith("A special magic number is hidden within the following text.")
    assert single.question.startswith("\nWhat is the special magic number for ")
    assert single.answer_prefix.startswith(" The special magic number for ")
    assert single.answer_prefix.endswith("mentioned in the provided text is")
    multi = make("niah_multivalue", 800, fmt, haystack_text, n=1)[0]
    assert multi.context.startswith("Some special magic numbers are hidden")
    assert multi.question.startswith("\nWhat are all the special magic numbers for ")
    uuid_task = make("niah_single_3", 800, fmt, haystack_text, n=1)[0]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", uuid_task.answers[0])
    multiquery = make("niah_multiquery", 800, fmt, haystack_text, n=1)[0]
    assert ", and " in multiquery.question


def test_vt_chain_resolves_to_answers(fmt, haystack_text):
    for s in make("vt", 1300, fmt, haystack_text, n=3):
        assert s.context.startswith("Memorize and track")  # the in-context example comes first
        main = s.context.rsplit("Memorize and track", 1)[1]
        value = re.search(r"assigned the value (\d+)", s.question).group(1)
        assigned = {}
        for name, rhs in re.findall(r"VAR ([A-Z]+) = (VAR [A-Z]+|\d+)", main):
            assigned[name] = rhs
        resolved = set()
        for name in assigned:
            seen, cur = 0, name
            while assigned[cur].startswith("VAR") and seen < 20:
                cur, seen = assigned[cur][4:], seen + 1
            if assigned[cur] == value:
                resolved.add(name)
        assert resolved == set(s.answers) and len(s.answers) == 5
        assert "5 variables are assgined the value " + value in s.answer_prefix


def test_cwe_answers_are_most_common(fmt, haystack_text):
    for length in (1500, 4500):
        s = make("cwe", length, fmt, haystack_text, n=1)[0]
        main = s.context.rsplit("Memorize the ones that appear most often.\n", 1)[1]
        words = re.findall(r"\d+\. (\S+)", main)
        counts = Counter(words)
        top = [w for w, _ in counts.most_common(10)]
        assert sorted(top) == sorted(s.answers)
        assert min(counts[w] for w in s.answers) > max(c for w, c in counts.items() if w not in s.answers)
        # the example shot precedes and carries its own answers
        assert s.context.count("Question: What are the 10 most common words") == 1


def test_fwe_answers_are_top_three(fmt, haystack_text):
    s = make("fwe", 2000, fmt, haystack_text, n=1)[0]
    text = s.context.split("coded words. ", 1)[1]
    counts = Counter(text.split())
    ranked = [w for w, _ in counts.most_common() if w != "..."]
    assert counts.most_common(1)[0][0] == "..."
    assert ranked[:3] == s.answers


def test_unknown_task_and_too_short(fmt, haystack_text):
    with pytest.raises(ValueError, match="unknown RULER task"):
        list(generate_ruler("qa_1", 1000, 1, fmt, haystack_text))
    with pytest.raises(ValueError, match="cannot fit"):
        make("niah_single_2", 200, fmt, haystack_text, n=1)


def test_max_new_tokens_override_keeps_prompt(fmt, haystack_text):
    a = make("niah_single_2", 900, fmt, haystack_text, n=1)[0]
    b = make("niah_single_2", 900, fmt, haystack_text, n=1, max_new_tokens=8)[0]
    assert a.context == b.context and b.max_new_tokens == 8
    assert a.max_new_tokens == TEMPLATES["niah"]["tokens_to_generate"]


def test_fit_units():
    assert fit_units(lambda n: 3 * n + 10, 100) == (30, 100)
    assert fit_units(lambda n: 3 * n + 10, 101, start=500) == (30, 100)
    assert fit_units(lambda n: n, 1000, start=2, cap=40) == (40, 40)
    with pytest.raises(ValueError):
        fit_units(lambda n: 50 + n, 10)


def test_chat_and_raw_counts_differ_by_template(fmt):
    raw = fmt.count("ctx", " q", "", chat_template=False)
    chat = fmt.count("ctx", " q", "", chat_template=True)
    assert raw == fmt.count_text("ctx q") + 1  # BOS
    assert chat > raw
    assert fmt.render("C", "Q", " P").endswith("<|assistant|>\n P")


def test_essay_haystack_without_spaces_fills_the_budget(fmt):
    """Text written without spaces (CJK) is sized by characters, not as one giant "word"."""
    from test_niah import cjk_text

    length = 1024
    for s in make("niah_single_2", length, fmt, cjk_text(600)):
        counted = fmt.count(s.context, s.question, s.answer_prefix, True)
        assert counted + RULER_TASKS["niah_single_2"].tokens_to_generate <= length
        assert length - (counted + RULER_TASKS["niah_single_2"].tokens_to_generate) < 80
        assert len(NEEDLE_RE.findall(s.context)) == 1
