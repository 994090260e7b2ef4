"""Vendored Noto fonts, script detection and RAQM-shaped text drawing for slips and posters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from PIL import Image, ImageDraw, ImageFont

Script = Literal["latin", "devanagari", "gujarati"]
SCRIPTS: tuple[Script, ...] = ("latin", "devanagari", "gujarati")

FONT_DIR = Path(__file__).resolve().parent / "fonts"

_FILES: dict[tuple[Script, bool], str] = {
    ("latin", False): "NotoSans-Regular.ttf",
    ("latin", True): "NotoSans-Bold.ttf",
    ("devanagari", False): "NotoSansDevanagari-Regular.ttf",
    ("devanagari", True): "NotoSansDevanagari-Bold.ttf",
    ("gujarati", False): "NotoSansGujarati-Regular.ttf",
    ("gujarati", True): "NotoSansGujarati-Bold.ttf",
}

# Language codes we print, mapped to the script whose font carries them.
LANGUAGE_SCRIPTS: dict[str, Script] = {"en": "latin", "hi": "devanagari", "gu": "gujarati"}

# Characters every one of our three fonts carries (digits, spaces, common punctuation, the danda that
# Gujarati also borrows, ZWJ/ZWNJ). They never start a new font run: splitting at a space or a ZWJ would
# break shaping, and the Indic fonts have no Latin letters, so the real split points are letters only.
_NEUTRAL = frozenset(" \t0123456789.,:;!?()[]'\"-–—/+&%#*@·\u0964\u0965\u200c\u200d\u00a0")


def script_of_char(ch: str) -> Script | None:
    """The script of one character, or None for characters any of our fonts can draw."""
    if ch in _NEUTRAL:
        return None
    code = ord(ch)
    if 0x0900 <= code <= 0x097F:
        return "devanagari"
    if 0x0A80 <= code <= 0x0AFF:
        return "gujarati"
    return "latin"


def resolve_script(script_or_lang: str) -> Script:
    """Map a language code ("hi") or a script name ("devanagari") to a script name."""
    key = script_or_lang.lower()
    if key in LANGUAGE_SCRIPTS:
        return LANGUAGE_SCRIPTS[key]
    for script in SCRIPTS:
        if key == script:
            return script
    raise ValueError(f"no font for script or language {script_or_lang!r}")


def font_path(script_or_lang: str, bold: bool = False) -> Path:
    """Path of the vendored TTF for a script or language."""
    return FONT_DIR / _FILES[(resolve_script(script_or_lang), bold)]


@lru_cache(maxsize=128)
def _load(script: Script, size: int, bold: bool) -> ImageFont.FreeTypeFont:
    path = str(FONT_DIR / _FILES[(script, bold)])
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.RAQM)


def font(script_or_lang: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """A cached RAQM-shaping FreeType font for a script name or language code."""
    return _load(resolve_script(script_or_lang), size, bold)


def script_of(text: str) -> Script:
    """The script of a text: its first Devanagari or Gujarati letter decides, else Latin."""
    for ch in text:
        script = script_of_char(ch)
        if script is not None and script != "latin":
            return script
    return "latin"


def font_for_text(text: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The font for a single-script text, picked by its script."""
    return _load(script_of(text), size, bold)


def runs(text: str) -> list[tuple[str, Script]]:
    """Split a text into maximal same-script runs; neutral characters join the run before them."""
    out: list[tuple[str, Script]] = []
    buf = ""
    current: Script | None = None
    for ch in text:
        script = script_of_char(ch)
        if script is None or script == current:
            buf += ch
            continue
        if current is None:
            current = script  # leading neutrals ride with the first real run
        else:
            out.append((buf, current))
            buf, current = "", script
        buf += ch
    if buf:
        out.append((buf, current or "latin"))
    return out


@dataclass(frozen=True)
class TextBox:
    """Ink extent of a shaped line: width, height above the baseline and depth below it, in pixels."""

    width: int
    ascent: int
    descent: int

    @property
    def height(self) -> int:
        return self.ascent + self.descent


@lru_cache(maxsize=2048)
def _layout(text: str, size: int, bold: bool) -> tuple[TextBox, tuple[tuple[str, Script, int], ...]]:
    # Each run is measured with the same RAQM font it is drawn with, so measuring and drawing agree.
    x = 0
    left = 0
    right = 0
    top = 0
    bottom = 0
    placed: list[tuple[str, Script, int]] = []
    for chunk, script in runs(text):
        f = _load(script, size, bold)
        fx0, fy0, fx1, fy1 = f.getbbox(chunk, anchor="ls")
        # Outward rounding: a bbox that is a hair too small would clip antialiased edges.
        x0, y0, x1, y1 = math.floor(fx0), math.floor(fy0), math.ceil(fx1), math.ceil(fy1)
        if not placed:
            left = x0
        placed.append((chunk, script, x))
        if x1 > x0:
            right = max(right, x + x1)
            top = min(top, y0)
            bottom = max(bottom, y1)
        x += round(f.getlength(chunk))
    # Shift so the ink starts at x=0: centring by ink looks right for glyphs with side bearings.
    shifted = tuple((c, s, px - left) for c, s, px in placed)
    return TextBox(max(0, right - left), -top, bottom), shifted


def measure(text: str, size: int, bold: bool = False) -> TextBox:
    """Ink box of a one-line text, shaped run by run exactly as draw_text draws it."""
    return _layout(text, size, bold)[0]


# Tallest above-base mark and deepest below-base mark of each script: lines reserve this much so a run
# of lines keeps an even rhythm whether or not a given line happens to carry an i-matra or a descender.
_NOMINAL_SAMPLES: dict[Script, str] = {"latin": "Hg", "devanagari": "कि कु", "gujarati": "કિ કુ"}


@lru_cache(maxsize=1024)
def line_box(text: str, size: int, bold: bool = False) -> TextBox:
    """Like measure(), but ascent/descent cover the nominal extent of every script in the text."""
    ink = measure(text, size, bold)
    ascent, descent = ink.ascent, ink.descent
    for script in {script for _, script in runs(text)}:
        nominal = _layout(_NOMINAL_SAMPLES[script], size, bold)[0]
        ascent, descent = max(ascent, nominal.ascent), max(descent, nominal.descent)
    return TextBox(ink.width, ascent, descent)


@lru_cache(maxsize=1024)
def text_mask(text: str, size: int, bold: bool = False, antialias: bool = False) -> Image.Image:
    """A cached mask of one line, tightly cropped to its TextBox: "1" mode, or "L" when antialiased."""
    box, placed = _layout(text, size, bold)
    mask = Image.new("L" if antialias else "1", (max(1, box.width), max(1, box.height)), 0)
    draw = ImageDraw.Draw(mask)
    # Non-antialiased rendering keeps FreeType's hinting crisp on a 1-bit thermal head; thresholding
    # antialiased glyphs instead eats thin Devanagari matras at small sizes. Posters go to office
    # printers and screens, where antialiasing looks better.
    draw.fontmode = "L" if antialias else "1"
    ink = 255 if antialias else 1
    for chunk, script, x in placed:
        draw.text((x, box.ascent), chunk, fill=ink, font=_load(script, size, bold), anchor="ls")
    return mask


def draw_text(
    image: Image.Image,
    xy: tuple[int, int],
    text: str,
    size: int,
    bold: bool = False,
    fill: int | tuple[int, ...] = 0,
    antialias: bool = False,
) -> TextBox:
    """Draw one line with its ink's top-left corner at xy; returns the TextBox that was used."""
    box = measure(text, size, bold)
    if box.width and box.height:
        mask = text_mask(text, size, bold, antialias)
        image.paste(fill, (xy[0], xy[1], xy[0] + box.width, xy[1] + box.height), mask)
    return box


def draw_text_centered(
    image: Image.Image,
    center_x: int,
    top: int,
    text: str,
    size: int,
    bold: bool = False,
    fill: int | tuple[int, ...] = 0,
    antialias: bool = False,
) -> TextBox:
    """Draw one line horizontally centred on center_x with its ink top at `top`."""
    box = measure(text, size, bold)
    return draw_text(image, (center_x - box.width // 2, top), text, size, bold, fill, antialias)


def wrap(text: str, size: int, max_width: int, bold: bool = False) -> list[str]:
    """Greedy word wrap by measured width; a single over-long word stays on its own line."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}" if line else word
        if line and measure(candidate, size, bold).width > max_width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def fit_lines(
    text: str, size: int, max_width: int, bold: bool = False, min_size: int = 12
) -> tuple[list[str], int]:
    """Wrap text to max_width in balanced lines, shrinking the size until no single word overflows."""
    while True:
        lines = wrap(text, size, max_width, bold)
        if size <= min_size or all(measure(line, size, bold).width <= max_width for line in lines):
            break
        size -= 1
    if len(lines) < 2:
        return lines, size
    # Greedy wrapping leaves a lone word on the last line ("... on the / screen"); find the narrowest
    # width that still needs the same number of lines, so the lines come out about equally long.
    lo, hi = 1, max_width
    while lo < hi:
        mid = (lo + hi) // 2
        if len(wrap(text, size, mid, bold)) <= len(lines):
            hi = mid
        else:
            lo = mid + 1
    return wrap(text, size, lo, bold), size
