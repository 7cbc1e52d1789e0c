"""NIAH grid: exact context lengths in tokens, the needle once at a sentence boundary near the depth."""

from __future__ import annotations

import pytest

from sparkv.eval.tasks.common import sentence_boundaries
from sparkv.eval.tasks.niah import (
    DEFAULT_ANSWER,
    DEFAULT_NEEDLE,
    build_context,
    check_needle_test,
    generate_niah,
    insert_needle,
)

LENGTHS = [64, 150, 333, 1000, 2500]
DEPTHS = [0.0, 0.1, 0.5, 0.9, 1.0]


def test_exact_lengths_needle_once(fmt, haystack_text):
    for sid, make in generate_niah(fmt, haystack_text, LENGTHS, DEPTHS):
        s = make()
        assert sid == s.id
        assert fmt.count_text(s.context) == s.meta["length"], sid
        assert s.context.count(DEFAULT_NEEDLE) == 1
        assert s.answers == [DEFAULT_ANSWER] and s.metric == "substring"
        assert s.meta["prompt_tokens"] == fmt.count(s.context, s.question, "", True)


def test_depth_places_needle_in_order(fmt, haystack_text):
    positions = []
    for _, make in generate_niah(fmt, haystack_text, [1500], [0.0, 0.25, 0.5, 0.75, 1.0]):
        s = make()
        pos = s.context.index(DEFAULT_NEEDLE) / len(s.context)
        positions.append(pos)
        assert abs(s.meta["actual_depth"] - s.meta["depth"]) < 0.1
    assert positions == sorted(positions)
    assert positions[0] == 0.0 and positions[-1] > 0.9


def test_insert_at_sentence_boundary():
    hay = "One. Two two. Three three three. Four."
    ctx, actual = insert_needle(hay, "NEEDLE.", 0.5)
    assert "NEEDLE." in ctx and ". NEEDLE. " in ctx
    assert insert_needle(hay, "N.", 0.0)[0].startswith("N. One.")
    assert insert_needle(hay, "N.", 1.0)[0].endswith("Four. N.")
    with pytest.raises(ValueError):
        insert_needle(hay, "N.", 1.5)


def test_custom_needle_and_haystack_repeats(fmt):
    text = "Short haystack sentence here. Another one follows it."
    out = [m() for _, m in generate_niah(fmt, text, [400], [0.5], needle="The code word is zebra-42.",
                                          question="What is the code word?", answer="zebra-42")]
    s = out[0]
    assert fmt.count_text(s.context) == 400
    assert s.context.count("zebra-42") == 1
    assert "What is the code word?" in s.question


def test_build_context_public_helper(bpe_tokenizer, haystack_text):
    plain = build_context(bpe_tokenizer, haystack_text, "", 300, 0.5)
    assert len(bpe_tokenizer(plain, add_special_tokens=False)["input_ids"]) == 300
    with_needle = build_context(bpe_tokenizer, haystack_text, "A fact: the moon is cheese.", 300, 0.3)
    assert len(bpe_tokenizer(with_needle, add_special_tokens=False)["input_ids"]) == 300
    assert with_needle.count("the moon is cheese") == 1


def test_empty_inputs_rejected(fmt, haystack_text):
    with pytest.raises(ValueError):
        list(generate_niah(fmt, haystack_text, [100], [0.5], needle=" "))
    with pytest.raises(ValueError, match="too short"):
        [m() for _, m in generate_niah(fmt, haystack_text, [5], [0.5])]


def cjk_text(n_sentences: int, punctuated: bool = True) -> str:
    """Chinese-like prose (varied sentences of CJK characters), with or without full stops."""
    chars = "山水风云花月江河湖海天地日星雨雪春夏秋冬"
    end = "。" if punctuated else ""
    return "".join("".join(chars[(i * 7 + k * 3) % len(chars)] for k in range(8 + i % 9)) + end
                   for i in range(n_sentences))


def test_sentence_boundaries_cjk_and_unpunctuated():
    assert sentence_boundaries("第一句。第二句！第三句？尾") == [0, 4, 8, 12, 13]
    assert sentence_boundaries('He said "hi." Then left.') == [0, 14, 24]
    words = " ".join(["word"] * 600)  # 2999 characters without a sentence end: cut about every 100, at spaces
    cuts = sentence_boundaries(words)
    gaps = [b - a for a, b in zip(cuts[:-1], cuts[1:])]
    assert max(gaps) <= 150 and all(words[c - 1] == " " for c in cuts[1:-1])
    assert max(b - a for a, b in zip(*[sentence_boundaries("字" * 2500)[i:] for i in (0, 1)])) <= 150
    # One short sentence is not "unpunctuated": no cut inside it; a short text without any mark is cut at spaces.
    assert sentence_boundaries("The quick brown fox jumps over the lazy dog.") == [0, 44]
    short = "the quick brown fox jumps over the lazy dog and runs"
    assert all(short[c - 1] == " " for c in sentence_boundaries(short)[1:-1])


@pytest.mark.parametrize("kind", ["cjk", "cjk-unpunctuated", "english-unpunctuated"])
def test_needle_depth_and_text_on_other_scripts(bpe_tokenizer, kind):
    """Depth honoured, exact length, no broken character (U+FFFD) where a cut splits a multi-byte character."""
    hay = {"cjk": cjk_text(400), "cjk-unpunctuated": cjk_text(400, punctuated=False),
           "english-unpunctuated": " ".join(f"lamp{i % 13} turns slowly" for i in range(900))}[kind]
    needle = "The gate code is 7341."
    for depth in (0.25, 0.5, 0.75):
        ctx = build_context(bpe_tokenizer, hay, needle, 400, depth)
        assert ctx.count(needle) == 1 and "\ufffd" not in ctx
        tokens = len(bpe_tokenizer(ctx, add_special_tokens=False)["input_ids"])
        # Byte-level BPE spells a CJK character with several tokens; whole characters cannot reach every count.
        assert tokens == 400 if kind.startswith("english") else abs(tokens - 400) <= 2, tokens
        haystack_chars = len(ctx) - len(needle) - 1  # the needle is joined with one space
        assert abs(ctx.index(needle) / haystack_chars - depth) < 0.1, (kind, depth)


def test_answer_missing_from_the_needle_is_refused(fmt, haystack_text):
    """The metric looks for the answer in the prediction: an answer the needle lacks would score every sample 0."""
    with pytest.raises(ValueError, match="does not occur in the needle"):
        list(generate_niah(fmt, haystack_text, [400], [0.5], needle="The gate code is 7341.", answer="7314"))


def test_an_answer_the_model_could_find_without_the_needle_is_refused(fmt, haystack_text):
    """The metric looks for the answer in the reply: an answer the question or the haystack already holds would
    score a reply that never retrieved the needle."""
    with pytest.raises(ValueError, match="occurs in the question"):
        list(generate_niah(fmt, haystack_text, [400], [0.5], needle="The gate code is 7341.",
                           question="What is the gate code?", answer="Gate Code"))
    word = next(w for w in haystack_text.split() if len(w) > 6 and w.isalpha())
    with pytest.raises(ValueError, match="occurs in the haystack text itself"):
        list(generate_niah(fmt, haystack_text, [400], [0.5], needle=f"The password is {word}.",
                           question="What is the password?", answer=word.upper()))
    check_needle_test("The gate code is 7341.", "What is the gate code?", "7341", haystack_text)  # a fair test


def test_close_depths_get_distinct_ids_and_usual_ids_stay(fmt, haystack_text):
    ids = [sid for sid, _ in generate_niah(fmt, haystack_text, [300], [0.1234561, 0.1234564, 0.5, 0.0, 1.0])]
    assert ids == ["L300-D0.1234561", "L300-D0.1234564", "L300-D0.5", "L300-D0", "L300-D1"]
    sample = dict(generate_niah(fmt, haystack_text, [300], [0.1234564]))["L300-D0.1234564"]()
    assert sample.id == "L300-D0.1234564"
