"""File helpers shared by the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_hash(path: Path) -> str:
    """SHA-256 over every file under ``path`` (names and bytes), or of the file itself; '' when
    it does not exist. Inputs must hash the same before and after every command."""
    if not path.exists():
        return ""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()
