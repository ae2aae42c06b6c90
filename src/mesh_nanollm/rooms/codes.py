"""Invite codes people can read out: Crockford base32 (no I, L, O, U), shown in groups, forgiving
on input (any case, spaces and dashes, I/L read as 1 and O as 0)."""

from __future__ import annotations

import re
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
LENGTH = 10  # 50 bits: guessing one of a few thousand live codes still takes ~10^11 tries
GROUPS = (4, 4, 2)  # K7QM-4XPZ-9D
_READ_AS = str.maketrans({"I": "1", "L": "1", "O": "0"})
_SEPARATORS = re.compile(r"[\s\-‐-―]+")  # spaces, ASCII and Unicode dashes
_CODE = re.compile(f"[{ALPHABET}]{{{LENGTH}}}")


def new_code() -> str:
    """A fresh code in its stored form: LENGTH characters of ALPHABET, no separators."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalize_code(typed: str) -> str:
    """What someone typed or pasted, in the stored form (it may still match no room)."""
    return _SEPARATORS.sub("", typed).upper().translate(_READ_AS)


def format_code(code: str) -> str:
    """The stored form grouped for reading; a code from before this alphabet is shown as it is."""
    if not _CODE.fullmatch(code):
        return code
    parts, start = [], 0
    for size in GROUPS:
        parts.append(code[start : start + size])
        start += size
    return "-".join(parts)
