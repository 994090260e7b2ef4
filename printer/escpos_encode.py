"""Encode a rendered slip image as ESC/POS bytes (GS v 0 raster image, feed, partial cut)."""

from __future__ import annotations

from typing import Any

from escpos.capabilities import get_profile
from escpos.printer import Dummy
from PIL import Image

# Rows per GS v 0 block: python-escpos' default, small enough for the receive buffer of cheap printers.
FRAGMENT_HEIGHT = 960


def _profile(width: int) -> Any:
    # The stock "default" profile has an unknown paper width, so python-escpos prints a warning to stdout on
    # every image. A per-call profile with the width set avoids that and makes escpos reject an image wider
    # than the paper instead of letting the printer wrap it. The copy is per instance: profile_data on the
    # generated class is shared by every printer in the process.
    profile = get_profile("default")
    data = dict(profile.profile_data)
    data["media"] = {"dpi": 203, "width": {"mm": "Unknown", "pixels": width}}
    profile.profile_data = data
    return profile


def encode_slip(image: Image.Image, cut: bool = True) -> bytes:
    """ESC/POS bytes that print `image` (any mode; dark = printed) and cut the paper."""
    printer = Dummy(profile=_profile(image.width))
    # ESC @ first: a previous job cut off mid-command (power loss, cable pulled) must not garble this one.
    printer.hw("INIT")
    printer.image(image, impl="bitImageRaster", fragment_height=FRAGMENT_HEIGHT)
    if cut:
        # Feeds 6 lines so the last printed row clears the cutter, then GS V 1 (partial cut).
        printer.cut(mode="PART")
    else:
        printer.print_and_feed(6)
    return bytes(printer.output)
