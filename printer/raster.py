"""Decode the GS v 0 raster images in an ESC/POS byte stream back into 1-bit PIL images."""

from __future__ import annotations

from PIL import Image

_ESC, _GS = 0x1B, 0x1D
# ESC/POS raster bits are 1 = burn a dot; PIL "1" mode bits are 1 = white. Flip every byte.
INVERT_BITS = bytes(255 - i for i in range(256))
# Parameter byte counts of the other commands our encoder (and python-escpos around images) emits.
_ESC_ARGS = {
    ord(cmd): args for cmd, args in {"@": 0, "d": 1, "J": 1, "a": 1, "!": 1, "E": 1, "2": 0, "3": 1}.items()
}


def decode_raster(data: bytes) -> list[Image.Image]:
    """Every GS v 0 block of `data`, in order, as a "1"-mode image (width padded to whole bytes).

    Walks the stream command by command so image bytes are never mistaken for commands; raises
    ValueError on an ESC/GS command it does not know or on a truncated block.
    """
    images: list[Image.Image] = []
    i, n = 0, len(data)
    while i < n:
        byte = data[i]
        if byte == _GS and data[i + 1 : i + 3] == b"v0":
            if i + 8 > n:
                raise ValueError(f"truncated GS v 0 header at offset {i}")
            width_bytes = data[i + 4] | data[i + 5] << 8
            height = data[i + 6] | data[i + 7] << 8
            start, end = i + 8, i + 8 + width_bytes * height
            if end > n:
                raise ValueError(f"truncated GS v 0 image at offset {i}")
            pixels = data[start:end].translate(INVERT_BITS)
            images.append(Image.frombytes("1", (width_bytes * 8, height), pixels))
            i = end
        elif byte == _GS and i + 1 < n and data[i + 1] == ord("V"):
            # GS V m: function A (m = 0, 1, 48, 49) has no argument, function B (65, 66) one feed byte.
            i += 4 if i + 2 < n and data[i + 2] in (65, 66) else 3
        elif byte == _ESC and i + 1 < n and data[i + 1] in _ESC_ARGS:
            i += 2 + _ESC_ARGS[data[i + 1]]
        elif byte in (_ESC, _GS):
            raise ValueError(f"unsupported ESC/POS command {data[i : i + 2]!r} at offset {i}")
        else:
            i += 1  # text and line feeds carry no raster data
    return images


def join_vertical(images: list[Image.Image]) -> Image.Image:
    """Stack fragments (a tall slip is sent as several GS v 0 blocks) into one "1"-mode image."""
    if not images:
        raise ValueError("no raster images to join")
    width = max(im.width for im in images)
    out = Image.new("1", (width, sum(im.height for im in images)), 1)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out
