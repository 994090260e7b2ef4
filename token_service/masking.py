"""Masked patient names for the hall board: "Ramesh Kumar" -> "R**** K****".

Each word keeps its first user-perceived character and the rest becomes a fixed "****" (so the mask
does not reveal the word's length). A "character" is a grapheme cluster as the eye sees it: a base with
its combining marks (matras, nukta, anusvara, accents) and, in Indic scripts, a conjunct joined by a
virama, so "कुमार" keeps "कु" and "ક્ષમા" keeps "ક્ષ" — a vowel sign or half letter is never cut off its
base. Only the first two words are shown; words without a letter (numbers, stray punctuation) are left
out. The full name never leaves the server on a public surface.
"""

from __future__ import annotations

import unicodedata

MASK = "****"
MAX_WORDS = 2
_ZWJ, _ZWNJ = "\u200d", "\u200c"


def _extends(prev: str, ch: str) -> bool:
    """Whether `ch` belongs to the grapheme cluster that `prev` (its predecessor) is part of."""
    if ch in (_ZWJ, _ZWNJ) or unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True
    # Conjunct linking (UAX #29, GB9c): consonant + virama (+ ZWJ) + consonant is one cluster.
    if unicodedata.combining(prev) == 9 or (prev == _ZWJ):
        return unicodedata.category(ch) == "Lo"
    return False


def first_grapheme(word: str) -> str:
    """The first grapheme cluster of `word` (NFC), or "" for an empty word."""
    if not word:
        return ""
    end = 1
    while end < len(word) and _extends(word[end - 1], word[end]):
        end += 1
    return word[:end]


def _has_letter(word: str) -> bool:
    return any(unicodedata.category(ch).startswith("L") for ch in word)


def mask_name(name: str | None, max_words: int = MAX_WORDS) -> str:
    """ "Ramesh Kumar Verma" -> "R**** K****"; "" when there is nothing to show."""
    if not name:
        return ""
    words = [w for w in unicodedata.normalize("NFC", str(name)).split() if _has_letter(w)]
    out = []
    for word in words[:max_words]:
        # Start at the first letter: "(Ramesh" shows "R****", not "(****".
        start = next(i for i, ch in enumerate(word) if unicodedata.category(ch).startswith("L"))
        out.append(first_grapheme(word[start:]) + MASK)
    return " ".join(out)
