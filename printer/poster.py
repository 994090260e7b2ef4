"""The counter's ABDM Scan & Share QR: bare PNG/SVG codes and the printable A4 poster (PNG, PDF)."""

from __future__ import annotations

import io
from urllib.parse import parse_qs, urlencode, urlsplit

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M
from qrcode.image.pil import PilImage
from qrcode.image.svg import SvgPathFillImage

from printer.fonts import draw_text, fit_lines, line_box, measure
from printer.qr import QUIET_ZONE_MODULES, qr_image, qr_modules

# A4 portrait at 150 dpi: sharp enough for a 12 cm QR on any office printer, small enough to serve fast.
POSTER_DPI = 150
POSTER_SIZE = (1240, 1754)

INSTRUCTIONS: dict[str, str] = {
    "en": "Scan with the ABHA app to get your OPD token",
    "hi": "ABHA ऐप से स्कैन करें और अपना ओपीडी टोकन पाएं",
    "gu": "તમારો OPD ટોકન મેળવવા ABHA એપથી સ્કેન કરો",
}
COUNTER_CODE_LABEL: dict[str, str] = {"en": "Counter code", "hi": "काउंटर कोड", "gu": "કાઉન્ટર કોડ"}

_INK = (17, 17, 17)
_BAND = (11, 61, 145)  # deep blue: still dark enough for white text when photocopied in greyscale
_WHITE = (255, 255, 255)
_MUTED = (90, 90, 90)


def counter_qr_url(share_base: str, hip_id: str, counter_code: str) -> str:
    """`{share_base}?hip-id=<hip>&counter-id=<code>`, the URL the ABHA app expects in a counter QR."""
    if not hip_id or not counter_code:
        raise ValueError("hip_id and counter_code are required")
    separator = "&" if "?" in share_base else "?"
    return share_base + separator + urlencode({"hip-id": hip_id, "counter-id": counter_code})


def _qr(url: str, box_size: int, image_factory: type) -> qrcode.QRCode:
    code = qrcode.QRCode(
        error_correction=ERROR_CORRECT_M,
        box_size=box_size,
        border=QUIET_ZONE_MODULES,
        image_factory=image_factory,
    )
    code.add_data(url)
    code.make(fit=True)
    return code


def qr_png(url: str, box_size: int = 10) -> bytes:
    """The bare QR (with its quiet zone) as a 1-bit PNG."""
    buf = io.BytesIO()
    _qr(url, box_size, PilImage).make_image().save(buf)
    return buf.getvalue()


def qr_svg(url: str) -> bytes:
    """The bare QR as a standalone SVG (one path on a white background), scalable for print shops."""
    buf = io.BytesIO()
    _qr(url, 10, SvgPathFillImage).make_image().save(buf)
    return buf.getvalue()


def _languages_with_english(languages: list[str]) -> list[str]:
    # Local languages first, in the configured order; English always present, last.
    return [lang for lang in languages if lang != "en"] + ["en"]


def _names(names: dict[str, str], languages: list[str]) -> list[str]:
    out: list[str] = []
    for lang in _languages_with_english(languages):
        name = names.get(lang, "").strip()
        if name and name not in out:
            out.append(name)
    return out


def _counter_code(url: str) -> str:
    return parse_qs(urlsplit(url).query).get("counter-id", [""])[0]


class _Lines:
    """A block of centred, wrapped lines: measured first so the page can be laid out around the QR."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.items: list[tuple[str, int, bool, int]] = []  # text, size, bold, gap above
        self.height = 0

    def add(self, text: str, size: int, bold: bool = False, gap: int = 0) -> None:
        lines, fitted = fit_lines(text, size, self.width, bold)
        for i, line in enumerate(lines):
            above = gap if i == 0 else size // 6
            self.items.append((line, fitted, bold, above))
            self.height += above + line_box(line, fitted, bold).height

    def draw(self, image: Image.Image, top: int, fill: tuple[int, int, int]) -> None:
        y = top
        for text, size, bold, above in self.items:
            y += above
            box, ink = line_box(text, size, bold), measure(text, size, bold)
            x = (image.width - ink.width) // 2
            draw_text(image, (x, y + box.ascent - ink.ascent), text, size, bold, fill, antialias=True)
            y += box.height


def render_poster(
    url: str,
    facility_names: dict[str, str],
    counter_names: dict[str, str],
    languages: list[str],
    counter_code: str | None = None,
) -> Image.Image:
    """The A4 portrait counter poster (1240×1754 RGB at 150 dpi); the code defaults to url's counter-id."""
    page_w, page_h = POSTER_SIZE
    margin = 90
    text_w = page_w - 2 * margin
    code = counter_code if counter_code is not None else _counter_code(url)
    image = Image.new("RGB", POSTER_SIZE, _WHITE)

    header = _Lines(text_w)
    for i, name in enumerate(_names(facility_names, languages)):
        header.add(name, 60 if i == 0 else 52, bold=True, gap=0 if i == 0 else 14)
    band = _Lines(text_w - 40)
    for i, name in enumerate(_names(counter_names, languages)):
        band.add(name, 50, bold=True, gap=0 if i == 0 else 12)

    footer = _Lines(text_w)
    for i, lang in enumerate(_languages_with_english(languages)):
        footer.add(INSTRUCTIONS[lang], 46, gap=0 if i == 0 else 22)
    if code:
        # Staff read the code aloud when a patient's app shows a different counter.
        labels = " / ".join(COUNTER_CODE_LABEL[lang] for lang in _languages_with_english(languages))
        footer.add(f"{labels}: {code}", 38, bold=True, gap=44)
    # The programme name is context, not an instruction: smaller and muted.
    credit = _Lines(text_w)
    credit.add("ABDM Scan & Share", 28)

    y = margin
    header.draw(image, y, _INK)
    y += header.height + 36
    if band.items:
        band_pad = 28
        band_h = band.height + 2 * band_pad
        image.paste(_BAND, (margin, y, page_w - margin, y + band_h))
        band.draw(image, y + band_pad, _WHITE)
        y += band_h
    credit_top = page_h - margin - credit.height
    footer_top = credit_top - 40 - footer.height

    # The QR takes whatever height is left, in whole pixels per module so every module prints the same.
    modules = qr_modules(url).width
    available = min(text_w, footer_top - y - 24) // (modules + 2 * QUIET_ZONE_MODULES)
    box = max(4, min(24, available))
    qr = qr_image(url, box).convert("RGB")
    qr_top = y + (footer_top - y - qr.height) // 2
    image.paste(qr, ((page_w - qr.width) // 2, qr_top))

    footer.draw(image, footer_top, _INK)
    credit.draw(image, credit_top, _MUTED)
    return image


def poster_png(
    url: str, facility_names: dict[str, str], counter_names: dict[str, str], languages: list[str]
) -> bytes:
    """The poster as a PNG tagged 150 dpi, so it prints at A4 size."""
    buf = io.BytesIO()
    render_poster(url, facility_names, counter_names, languages).save(
        buf, "PNG", dpi=(POSTER_DPI, POSTER_DPI), optimize=False
    )
    return buf.getvalue()


def poster_pdf(
    url: str, facility_names: dict[str, str], counter_names: dict[str, str], languages: list[str]
) -> bytes:
    """The poster as a one-page A4 PDF."""
    buf = io.BytesIO()
    code = _counter_code(url)
    render_poster(url, facility_names, counter_names, languages).save(
        buf,
        "PDF",
        resolution=float(POSTER_DPI),
        # Pillow embeds RGB pages as JPEG: high quality and no chroma subsampling keep QR edges crisp.
        quality=95,
        subsampling=0,
        title=f"OPD token QR poster {code}".strip(),
        # No timestamps: the same counter always yields byte-identical PDFs, which caches and diffs like.
        creationDate=None,
        modDate=None,
    )
    return buf.getvalue()
