"""File helpers shared by processes that write the same files (evaluation shards, first-use model conversion)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Iterator


@contextlib.contextmanager
def exclusive(f: IO) -> Iterator[None]:
    """Hold an exclusive ``flock`` on an open file (POSIX; a no-op where ``fcntl`` is missing, e.g. Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
