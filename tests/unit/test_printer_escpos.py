"""ESC/POS encoding against golden bytes and python-escpos itself, the raster decoder, and printer URIs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from escpos.printer import Dummy, File, Network, Usb
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from printer.escpos_encode import FRAGMENT_HEIGHT, encode_slip, raster_blocks
from printer.raster import decode_raster, join_vertical
from printer.slip import SlipData, render_slip
from printer.transport import PrinterUnavailable, open_printer, parse_uri, send

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "printer"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"


def golden_slip(width: int = 576) -> Image.Image:
    data = SlipData.from_json(json.loads((GOLDEN / "slip_data.json").read_text(encoding="utf-8")))
    return render_slip(data, width)


def test_slip_bytes_match_golden() -> None:
    data = encode_slip(golden_slip())
    path = GOLDEN / "slip_80mm.bin"
    if UPDATE:
        path.write_bytes(data)
    assert data == path.read_bytes(), "ESC/POS bytes changed; UPDATE_GOLDEN=1 regenerates after review"
    assert data.startswith(b"\x1b@\x1dv0\x00")  # initialise, then the raster image
    assert data.endswith(b"\x1bd\x06\x1dV\x01")  # feed 6 lines, partial cut


@pytest.mark.parametrize("width", [384, 576])
def test_decode_raster_gives_back_the_slip(width: int) -> None:
    slip = golden_slip(width)
    blocks = decode_raster(encode_slip(slip))
    assert len(blocks) == -(-slip.height // FRAGMENT_HEIGHT)
    assert join_vertical(blocks).tobytes() == slip.tobytes()


@pytest.mark.parametrize("width", [384, 576])
def test_fast_raster_equals_python_escpos_image(width: int, capsys: pytest.CaptureFixture[str]) -> None:
    # raster_blocks replaces escpos' image pipeline for speed; it must not change a single byte.
    slip = golden_slip(width)
    reference = Dummy()
    reference.hw("INIT")
    reference.image(slip, impl="bitImageRaster", fragment_height=FRAGMENT_HEIGHT)
    reference.cut(mode="PART")
    capsys.readouterr()  # escpos warns on stdout about the default profile's unknown paper width
    assert encode_slip(slip) == reference.output


def test_greyscale_images_go_through_escpos() -> None:
    image = Image.linear_gradient("L").resize((200, 40))
    data = encode_slip(image, cut=False)
    (block,) = decode_raster(data)
    assert block.size == (200, 40)  # 200 is already a whole number of bytes
    assert data.endswith(b"\x1bd\x06")


@settings(max_examples=25, deadline=None)
@given(
    width_bytes=st.integers(min_value=1, max_value=72),
    height=st.integers(min_value=1, max_value=2 * FRAGMENT_HEIGHT + 5),
    seed=st.binary(min_size=1, max_size=64),
)
def test_raster_round_trip(width_bytes: int, height: int, seed: bytes) -> None:
    size = (width_bytes * 8, height)
    raw = (seed * (width_bytes * height // len(seed) + 1))[: width_bytes * height]
    image = Image.frombytes("1", size, raw)
    assert join_vertical(decode_raster(raster_blocks(image))).tobytes() == image.tobytes()


def test_decoder_rejects_truncated_and_unknown_data() -> None:
    data = raster_blocks(Image.new("1", (16, 4), 0))
    with pytest.raises(ValueError, match="truncated"):
        decode_raster(data[:-1])
    with pytest.raises(ValueError, match="unsupported"):
        decode_raster(b"\x1b\x70\x00\x19\xfa")
    assert decode_raster(b"hello\n\x1b@") == []
    with pytest.raises(ValueError):
        join_vertical([])


def test_raster_blocks_need_a_byte_aligned_bitmap() -> None:
    with pytest.raises(ValueError):
        raster_blocks(Image.new("1", (10, 4)))
    with pytest.raises(ValueError):
        raster_blocks(Image.new("L", (16, 4)))


def test_parse_uri() -> None:
    assert parse_uri("tcp://10.0.0.5").port == 9100
    tcp = parse_uri("tcp://printer.local:9101")
    assert (tcp.scheme, tcp.host, tcp.port) == ("tcp", "printer.local", 9101)
    usb = parse_uri("usb://04b8:0e15")
    assert (usb.vendor_id, usb.product_id, usb.in_ep, usb.out_ep) == (0x04B8, 0x0E15, 0x82, 0x01)
    usb = parse_uri("usb://0416:5011?in_ep=0x81&out_ep=0x03")
    assert (usb.in_ep, usb.out_ep) == (0x81, 0x03)
    assert parse_uri("file:///dev/usb/lp0").path == "/dev/usb/lp0"
    assert parse_uri("dummy://").scheme == "dummy"


@pytest.mark.parametrize(
    "uri",
    ["lpt://1", "tcp://", "tcp://host:port", "usb://04b8", "usb://xyz:0e15", "file://", "file://host/x"],
)
def test_bad_uris_are_value_errors(uri: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(uri)


def test_open_printer_maps_schemes() -> None:
    network = open_printer("tcp://127.0.0.1:9101", timeout=3)
    assert isinstance(network, Network) and (network.host, network.port, network.timeout) == (
        "127.0.0.1",
        9101,
        3,
    )
    assert isinstance(open_printer("file:///dev/usb/lp0"), File)
    assert isinstance(open_printer("dummy://"), Dummy)
    if Usb.is_usable():
        assert isinstance(open_printer("usb://04b8:0e15"), Usb)
    else:
        with pytest.raises(PrinterUnavailable, match="pyusb"):
            open_printer("usb://04b8:0e15")


def test_send_to_file_writes_the_exact_bytes(tmp_path: Path) -> None:
    target = tmp_path / "lp0"
    payload = encode_slip(golden_slip(384))
    send(f"file://{target}", payload)
    assert target.read_bytes() == payload
    send("dummy://", payload)


def test_send_to_missing_device_is_printer_unavailable(tmp_path: Path) -> None:
    with pytest.raises(PrinterUnavailable) as info:
        send(f"file://{tmp_path}/no/such/dir/lp0", b"\x1b@")
    assert info.value.uri.endswith("lp0") and "\n" not in str(info.value)
