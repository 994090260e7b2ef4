"""Token slip data and its deterministic 1-bit rendering for 58 mm and 80 mm thermal paper."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from PIL import Image

from printer.fonts import draw_text, fit_lines, line_box, measure
from printer.qr import QUIET_ZONE_MODULES, box_size_for, qr_image
from printer.slip_data import (  # the data, re-exported beside its renderer
    LANGUAGES,
    PLEASE_WAIT,
    PRIORITIES,
    PRIORITY_LABELS,
    SCAN_FOR_STATUS,
    SOURCES,
    TOKEN_WORD,
    WIDTH_58MM,
    WIDTH_80MM,
    SlipData,
    format_issued_at,
)


def _ordered_names(names: Mapping[str, str], languages: list[str], english_last: bool) -> list[str]:
    """Names in the configured language order, English added if missing, duplicates dropped."""
    order = [lang for lang in languages if lang != "en"]
    if english_last or "en" not in languages:
        order.append("en")
    else:
        order.insert(languages.index("en"), "en")
    out: list[str] = []
    for lang in order:
        name = names.get(lang, "").strip()
        if name and name not in out:
            out.append(name)
    return out


@dataclass(frozen=True)
class _Style:
    """Sizes in printer dots for one paper width (203 dpi heads: 8 dots per mm)."""

    width: int
    margin: int
    facility: int
    counter: int
    caption: int
    token_max: int
    priority: int
    body: int
    small: int
    qr_target: int

    @classmethod
    def for_width(cls, width: int) -> _Style:
        s = width / WIDTH_80MM

        # Small Indic text below ~20 dots loses its matras on a thermal head, so sizes have floors.
        def sz(base: int, floor: int) -> int:
            return max(floor, round(base * s))

        return cls(
            width=width,
            margin=sz(16, 8),
            facility=sz(32, 24),
            counter=sz(28, 22),
            caption=sz(22, 20),
            token_max=sz(210, 150),
            priority=sz(28, 22),
            body=sz(24, 21),
            small=sz(21, 20),
            qr_target=max(176, round(width * 0.42)),
        )


_Op = Callable[[Image.Image], None]


class _Column:
    """Stacks centred blocks top to bottom, then paints them onto a canvas of exactly the used height."""

    def __init__(self, style: _Style) -> None:
        self.style = style
        self.y = style.margin
        self.ops: list[_Op] = []

    @property
    def content_width(self) -> int:
        return self.style.width - 2 * self.style.margin

    def gap(self, px: int) -> None:
        self.y += px

    def line(self, text: str, size: int, bold: bool = False, fill: int = 0, tight: bool = False) -> None:
        ink = measure(text, size, bold)
        box = ink if tight else line_box(text, size, bold)
        x, y = (self.style.width - ink.width) // 2, self.y + box.ascent - ink.ascent

        def op(im: Image.Image) -> None:
            draw_text(im, (x, y), text, size, bold, fill)

        self.ops.append(op)
        self.y += box.height

    def paragraph(self, text: str, size: int, bold: bool = False, leading: int = 2) -> None:
        lines, fitted = fit_lines(text, size, self.content_width, bold)
        for i, text_line in enumerate(lines):
            if i:
                self.gap(leading)
            self.line(text_line, fitted, bold)

    def rule(self, thickness: int = 2) -> None:
        x0, x1, y = self.style.margin, self.style.width - self.style.margin, self.y
        self.ops.append(lambda im: im.paste(0, (x0, y, x1, y + thickness)))
        self.y += thickness

    def paste(self, image: Image.Image) -> None:
        x, y = (self.style.width - image.width) // 2, self.y
        self.ops.append(lambda im: im.paste(image, (x, y)))
        self.y += image.height

    def inverted_box(self, lines: list[str], size: int, pad: int) -> None:
        x0, x1, y0 = self.style.margin, self.style.width - self.style.margin, self.y
        height = pad * 2 + sum(line_box(t, size, True).height for t in lines) + pad // 2 * (len(lines) - 1)
        self.ops.append(lambda im: im.paste(0, (x0, y0, x1, y0 + height)))
        self.y += pad
        for i, text in enumerate(lines):
            if i:
                self.gap(pad // 2)
            self.line(text, size, bold=True, fill=1)
        self.y = y0 + height

    def render(self) -> Image.Image:
        image = Image.new("1", (self.style.width, self.y + self.style.margin), 1)
        for op in self.ops:
            op(image)
        return image


def _token_size(label: str, style: _Style, max_width: int) -> int:
    # Largest size that fits the paper: the number is what patients read from across the hall.
    size = style.token_max
    while size > 40 and measure(label, size, True).width > max_width:
        size -= 4
    return size


def _priority_lines(priority: str, languages: list[str], size: int, max_width: int) -> list[str]:
    labels = PRIORITY_LABELS[priority]
    texts = _ordered_names(labels, languages, english_last=False)
    joined = " / ".join(texts)
    if measure(joined, size, True).width <= max_width:
        return [joined]
    return texts


def render_slip(data: SlipData, width: int = WIDTH_80MM) -> Image.Image:
    """Render the slip as a "1"-mode image `width` dots wide (384 = 58 mm, 576 = 80 mm paper)."""
    if width % 8 or not 256 <= width <= 832:
        raise ValueError("width must be a multiple of 8 dots between 256 and 832")
    style = _Style.for_width(width)
    col = _Column(style)
    langs = data.languages

    for i, name in enumerate(_ordered_names(data.facility_names, langs, english_last=True)):
        col.gap(4 if i else 0)
        col.paragraph(name, style.facility, bold=True)
    counters = _ordered_names(data.counter_names, langs, english_last=True)
    for i, name in enumerate(counters):
        col.gap(10 if i == 0 else 4)
        col.paragraph(name, style.counter)
    col.gap(14)
    col.rule()

    col.gap(14)
    col.line(" / ".join(_ordered_names(TOKEN_WORD, langs, english_last=False)), style.caption)
    col.gap(16)
    col.line(data.token_label, _token_size(data.token_label, style, col.content_width), bold=True, tight=True)
    col.gap(18)
    if data.priority != "normal":
        pad = max(8, style.priority // 3)
        lines = _priority_lines(data.priority, langs, style.priority, col.content_width - 2 * pad)
        col.inverted_box(lines, style.priority, pad)
        col.gap(14)
    col.line(format_issued_at(data.issued_at, data.timezone), style.body)
    col.gap(14)
    col.rule()

    col.gap(4)
    for lang in langs:
        col.gap(6)
        col.paragraph(PLEASE_WAIT[lang], style.body)

    box = box_size_for(data.status_url, style.qr_target)
    col.gap(QUIET_ZONE_MODULES * box)
    col.paste(qr_image(data.status_url, box))
    col.gap(QUIET_ZONE_MODULES * box - 6)
    for lang in langs:
        col.gap(2)
        col.paragraph(SCAN_FOR_STATUS[lang], style.small)
    if data.footer:
        col.gap(14)
        col.rule(1)
        col.gap(10)
        col.paragraph(data.footer, style.small)
    col.gap(4)
    return col.render()


__all__ = [
    "LANGUAGES",
    "PLEASE_WAIT",
    "PRIORITIES",
    "PRIORITY_LABELS",
    "SOURCES",
    "WIDTH_58MM",
    "WIDTH_80MM",
    "SlipData",
    "format_issued_at",
    "render_slip",
]
