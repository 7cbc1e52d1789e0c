"""NIAH grid: exact context lengths in tokens, the needle once at a sentence boundary near the depth."""

from __future__ import annotations

import pytest

from sparkv.eval.tasks.niah import (DEFAULT_ANSWER, DEFAULT_NEEDLE, build_context, generate_niah, insert_needle)

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
