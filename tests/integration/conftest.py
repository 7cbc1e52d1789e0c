"""Make ``tests.utils`` (tiny models, tokenizer) importable however pytest is launched."""

import pathlib
import sys

ROOT = str(pathlib.Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
