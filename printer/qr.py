"""QR code matrices and 1-bit images, built once per URL and reused for reprints."""

from __future__ import annotations

from functools import lru_cache

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

# A QR decoder needs four modules of blank paper around the symbol (ISO/IEC 18004 quiet zone).
QUIET_ZONE_MODULES = 4


@lru_cache(maxsize=256)
def qr_modules(url: str) -> Image.Image:
    """The symbol at one pixel per module, without quiet zone, "1" mode (0 = dark module)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=0)
    code.add_data(url)
    code.make(fit=True)
    matrix = code.get_matrix()
    n = len(matrix)
    # One byte per pixel, then a single C-side conversion: much faster than putpixel for ~1000 modules.
    data = bytes(0 if dark else 255 for row in matrix for dark in row)
    return Image.frombytes("L", (n, n), data).convert("1")


@lru_cache(maxsize=256)
def qr_image(url: str, box_size: int) -> Image.Image:
    """The symbol scaled to box_size pixels per module, without quiet zone, "1" mode."""
    modules = qr_modules(url)
    n = modules.width
    return modules.resize((n * box_size, n * box_size), Image.Resampling.NEAREST)


def box_size_for(url: str, target_px: int, minimum: int = 3) -> int:
    """The largest whole module size whose symbol fits in target_px (never below `minimum` dots)."""
    return max(minimum, target_px // qr_modules(url).width)
