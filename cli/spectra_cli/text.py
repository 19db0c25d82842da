"""Text shown on the terminal that comes from files (key names, paths): made harmless."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, ESC, other C0/C1 controls, bidi
    overrides and other format characters) written as its Python escape, e.g. ``\\x1b``."""
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )
