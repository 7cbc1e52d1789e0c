"""Metrics on known cases. ROUGE-L and fuzz.ratio expectations were computed with the `rouge` (1.0.1) and
`fuzzywuzzy` (0.18, no python-Levenshtein) packages that LongBench's eval.py imports."""

from __future__ import annotations

import pytest

from sparkv.eval import metrics as M

ROUGE_CASES = [
    ("The cat sat on the mat. It was happy.", "A cat was sitting on the mat. The cat was happy.", 0.7777777727777778),
    ("the the the cat", "the cat the", 0.4999999950000001),
    ("", "reference text.", 0.0),  # the package raises on an empty hypothesis; LongBench turns that into 0
    ("...", "reference text.", 0.0),
    ("Summary: the government report finds that funding increased. Costs rose by 10 percent. Officials disagree.",
     "The report found that federal funding increased while costs rose 10 percent; officials disagreed about the "
     "causes. More oversight is recommended.", 0.33333332847222225),
    ("word", "word", 0.999999995),
    ("a b c d e f g", "g f e d c b a", 0.14285713785714302),
    ("Person A: hi. Person B: hello there. ok", "A and B greet each other. They say hi.", 0.12499999507812519),
]


@pytest.mark.parametrize("prediction,reference,expected", ROUGE_CASES)
def test_rouge_matches_rouge_package(prediction, reference, expected):
    assert M.rouge_score(prediction, reference) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("a,b,expected", [
    ("    return x + 1", "return x + 1", 86), ("", "", 100), ("abc", "", 0),
    ("for i in range(10):", "for j in range(10):", 95),
])
def test_fuzz_ratio_matches_fuzzywuzzy(a, b, expected):
    assert M.fuzz_ratio(a, b) == expected


def test_normalize_answer_squad_rules():
    assert M.normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert M.normalize_answer("An apple a day") == "apple day"
    assert M.normalize_answer("theatre") == "theatre"  # articles only as whole words


def test_qa_f1():
    assert M.qa_f1_score("The Eiffel Tower", "eiffel tower") == 1.0
    assert M.qa_f1_score("Paris", "London") == 0.0
    # prediction "in paris france" vs "paris": precision 1/3, recall 1 -> F1 0.5
    assert M.qa_f1_score("in Paris, France", "Paris") == pytest.approx(0.5)
    assert M.qa_f1_score("", "Paris") == 0.0


def test_classification_score():
    classes = ["Abbreviation", "Entity", "Description", "Human", "Location", "Numeric value"]
    assert M.classification_score("Location", "Location", all_classes=classes) == 1.0
    assert M.classification_score("Location or Human", "Location", all_classes=classes) == 0.5
    assert M.classification_score("Entity", "Location", all_classes=classes) == 0.0
    # a class that is a substring of the ground truth (but not equal) is dropped from the matches
    classes2 = ["Human", "Human being"]
    assert M.classification_score("Human being", "Human being", all_classes=classes2) == 1.0


def test_retrieval_and_count():
    assert M.retrieval_score("Paragraph 12", "Paragraph 12") == 1.0
    assert M.retrieval_score("Paragraph 12 or Paragraph 3", "Paragraph 12") == 0.5
    assert M.retrieval_score("I do not know", "Paragraph 12") == 0.0
    with pytest.raises(ValueError):
        M.retrieval_score("3", "12")
    assert M.count_score("There are 7 unique paragraphs", "7") == 1.0
    assert M.count_score("7 or 8", 7) == 0.5
    assert M.count_score("seven", "7") == 0.0


def test_code_sim_takes_first_plain_line():
    pred = "```python\n# comment\nreturn x + 1\nmore"
    assert M.code_sim_score(pred, "return x + 1") == 1.0
    assert M.code_sim_score("\n\n// c\n", "x") == 0.0  # no usable line -> ""


def test_longbench_score_rules():
    # first line only for trec / triviaqa / samsum / lsht
    assert M.longbench_score("triviaqa", "\nParis\nLondon is wrong", ["Paris"]) == 1.0
    assert M.longbench_score("hotpotqa", "Paris\nLondon", ["Paris"]) == pytest.approx(2 / 3)
    # best over all references
    assert M.longbench_score("hotpotqa", "London", ["Paris", "London"]) == 1.0
    assert M.longbench_score("trec", "Human", ["Human"], ["Human", "Location"]) == 1.0
    with pytest.raises(ValueError, match="unknown LongBench task"):
        M.longbench_score("lsht", "x", ["x"])


def test_ruler_string_match():
    assert M.string_match_all("The numbers are 123 and 456.", ["123", "456"]) == 1.0
    assert M.string_match_all("only 123", ["123", "456"]) == 0.5
    assert M.string_match_part("only 123", ["123", "456"]) == 1.0
    assert M.string_match_part("nothing", ["123", "456"]) == 0.0
    assert M.string_match_all("ABC-def", ["abc-DEF"]) == 1.0  # case-insensitive
    assert M.ruler_postprocess("  a\x00b\tc \n") == "a\nb\nc"
    assert M.score_prediction("string_match_all", " 123\x01456", ["123", "456"]) == 1.0


def test_niah_substring():
    assert M.substring_match("You should EAT A SANDWICH AND SIT in Dolores Park", "eat a sandwich and sit") == 1.0
    assert M.substring_match("no", "eat") == 0.0
    assert M.score_prediction("substring", "x", ["y", "X"]) == 1.0
    with pytest.raises(ValueError):
        M.score_prediction("bleu", "x", ["x"])
