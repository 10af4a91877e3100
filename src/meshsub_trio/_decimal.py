"""Whole numbers read from the wire: ASCII digits only, and a bounded count of them.

Why not ``text.isdigit()`` then ``int(text)``: ``isdigit`` is true for
characters ``int`` refuses (``"²"``), and ``int`` refuses more than 4,300
digits; either way a peer's bytes became an exception nobody expected.
"""

from __future__ import annotations

import re

_DIGITS = re.compile(r"[0-9]+")


def decimal(text: str, max_digits: int = 20) -> int | None:
    """*text* as a whole number, or None unless it is 1 to *max_digits* ASCII digits."""
    if len(text) > max_digits or _DIGITS.fullmatch(text) is None:
        return None
    return int(text)
