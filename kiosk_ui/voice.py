"""Spoken call-outs for the display board, assembled from pre-generated clips.

The board runs on a plain PC browser that usually has no speech voices, so
``scripts/gen_voice.py`` renders short clips with espeak-ng into
``kiosk_ui/static/voice/`` and the browser plays them one after another.
This module decides *which* clips make up a call-out; ``static/js/callout.js``
implements the same rules in JavaScript (a test keeps the two in step).

Clip names inside a language folder (``hi/``, ``gu/``, ``en/``):

* ``token``, ``desk``, ``come``  phrase stems ("टोकन नंबर", "डेस्क", "पर आइए")
* ``n0`` .. ``n99``              whole number words (Hindi/Gujarati 1-99 are irregular)
* ``h1`` .. ``h9``               "one hundred" .. "nine hundred" (Gujarati: "બસો" etc.)
* ``k1`` .. ``k9``               "one thousand" .. "nine thousand"
* ``letter_a`` .. ``letter_z``   letter names, spoken one by one

plus the language independent ``chime`` at the top level.
"""

from __future__ import annotations

import re

CLIP_EXT = ".ogg"
CHIME = "chime" + CLIP_EXT

#: Languages that have clips, in no particular order (the board config orders them).
LANGUAGES: tuple[str, ...] = ("hi", "gu", "en")

# The spoken sentence per language; "label" and "desk" are replaced by the
# stems of the token label and the desk label.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "hi": ("token", "label", "desk", "desk_label", "come"),  # टोकन नंबर ए सत्रह, डेस्क तीन पर आइए
    "gu": ("token", "label", "desk", "desk_label", "come"),  # ટોકન નંબર એ સત્તર, ડેસ્ક ત્રણ પર આવો
    "en": ("token", "label", "desk", "desk_label"),  # Token number A seventeen, please go to desk three
}

#: Largest number spoken as a number; longer digit runs are read digit by digit.
MAX_NUMBER = 9999

_PART_RE = re.compile(r"[A-Za-z]|[0-9]+", re.ASCII)
# Spaces and punctuation allowed around a desk prefix (explicit, so the JavaScript twin matches exactly).
_SEP = r"[ \t\u00a0._:#-]*"
# "Desk 3", "desk-A" -> the rest; "D3", "D-3" -> the number ("D" alone stays a letter).
_DESK_PREFIX_RE = re.compile(
    rf"^{_SEP}(?:desk(?![a-z]){_SEP}(?=[a-z0-9])|d{_SEP}(?=[0-9]))", re.IGNORECASE | re.ASCII
)


def number_stems(n: int) -> list[str]:
    """Stems that speak ``n`` (0..9999), e.g. 117 -> ["h1", "n17"], 2005 -> ["k2", "n5"]."""
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number out of range 0..{MAX_NUMBER}: {n}")
    if n < 100:
        return [f"n{n}"]
    stems: list[str] = []
    thousands, rest = divmod(n, 1000)
    hundreds, rest = divmod(rest, 100)
    if thousands:
        stems.append(f"k{thousands}")
    if hundreds:
        stems.append(f"h{hundreds}")
    if rest:
        stems.append(f"n{rest}")
    return stems


def label_stems(label: str) -> list[str]:
    """Stems for a token label: letters one by one, digit runs as numbers.

    "A17" -> letter_a, n17; "OPD-17" -> letter_o, letter_p, letter_d, n17;
    "A007" -> letter_a, n7.  Digit runs longer than 9999 are read digit by digit.
    Anything that is not an ASCII letter or digit (dashes, spaces) is skipped.
    """
    stems: list[str] = []
    for part in _PART_RE.findall(label):
        if part.isdigit():
            if len(part.lstrip("0")) <= len(str(MAX_NUMBER)):
                stems.extend(number_stems(int(part)))
            else:
                stems.extend(f"n{d}" for d in part)
        else:
            stems.append("letter_" + part.lower())
    return stems


def desk_stems(desk_label: str) -> list[str]:
    """Stems for a desk label; "3", "D3", "Desk 3", "desk-3" all become n3; "Desk B" -> letter_b."""
    return label_stems(_DESK_PREFIX_RE.sub("", desk_label, count=1))


def callout_clips(lang: str, token_label: str, desk_label: str) -> list[str]:
    """Ordered clip paths (relative to /static/voice/) for one language."""
    try:
        template = TEMPLATES[lang]
    except KeyError:
        raise ValueError(f"no voice clips for language {lang!r}") from None
    stems: list[str] = []
    for slot in template:
        if slot == "label":
            stems.extend(label_stems(token_label))
        elif slot == "desk_label":
            stems.extend(desk_stems(desk_label))
        else:
            stems.append(slot)
    return [f"{lang}/{stem}{CLIP_EXT}" for stem in stems]


def callout_sequence(languages: list[str], token_label: str, desk_label: str) -> list[str]:
    """The chime, then the call-out in each configured language, in order.

    Languages without clips are skipped, so a board configured with a language
    we have no voice for still announces in the others.
    """
    clips = [CHIME]
    for lang in languages:
        if lang in TEMPLATES:
            clips.extend(callout_clips(lang, token_label, desk_label))
    return clips


def all_stems(lang: str) -> list[str]:
    """Every stem a call-out in ``lang`` can use (what the generator must render)."""
    if lang not in TEMPLATES:
        raise ValueError(f"no voice clips for language {lang!r}")
    phrases = [s for s in TEMPLATES[lang] if s not in ("label", "desk_label")]
    numbers = [f"n{i}" for i in range(100)]
    hundreds = [f"h{i}" for i in range(1, 10)]
    thousands = [f"k{i}" for i in range(1, 10)]
    letters = [f"letter_{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    return phrases + numbers + hundreds + thousands + letters
