"""Bundled haystacks: the Paul Graham essays and user text files."""

from __future__ import annotations

import pytest

from sparkv.data import paul_graham_essays, read_haystack


def test_essays_are_bundled():
    text = paul_graham_essays()
    assert len(text) > 500_000 and "startup" in text


def test_read_haystack_files_and_folders(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("First text.\n")
    b.write_text("Second text.")
    assert read_haystack([a, b]) == "First text.\n\nSecond text."
    assert read_haystack([tmp_path]) == "First text.\n\nSecond text."  # a folder stands for its *.txt
    assert read_haystack(None) == paul_graham_essays()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_haystack([tmp_path / "missing.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.txt"):
        read_haystack([tmp_path / "empty"])
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n")
    with pytest.raises(ValueError, match="no text"):
        read_haystack([blank])
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("Caf\u00e9 au lait.".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt' is not UTF-8 text .* at byte 3"):  # not silently replaced
        read_haystack([latin1])
