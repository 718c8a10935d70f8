"""Small ``key = value`` configuration files (the agent's and the admin's)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def parse_kv(text: str) -> tuple[dict[str, str], list[str]]:
    """Parse ``key = value`` lines; ``#`` starts a comment line.

    Returns the pairs (keys lower-cased, values stripped of quotes) and a list
    of problems, one per line that is not a pair.
    """
    pairs: dict[str, str] = {}
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            problems.append(f"line {number}: expected 'key = value', got {raw.strip()[:60]!r}")
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs[key] = value
    return pairs, problems


def write_atomic(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``text`` (or bytes) so that a reader sees the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
