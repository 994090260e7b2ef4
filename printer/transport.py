"""Printer URIs (tcp://, usb://, file://, dummy://) mapped to python-escpos transports, and raw sends.

Exceptions:
    PrinterUnavailable   the printer could not be reached or stopped accepting data (retry later)
    ValueError           the URI itself is malformed or of an unknown scheme (a configuration error)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from escpos.exceptions import DeviceNotFoundError
from escpos.printer import Dummy, File, Network, Usb

DEFAULT_TCP_PORT = 9100  # the raw "JetDirect" port every Ethernet receipt printer listens on
DEFAULT_TIMEOUT = 10.0


class PrinterUnavailable(Exception):
    """The printer at `uri` could not be opened or written to (offline, busy, unplugged, timed out)."""

    def __init__(self, uri: str, reason: str) -> None:
        super().__init__(f"printer {uri} unavailable: {reason}")
        self.uri = uri
        self.reason = reason


@dataclass(frozen=True)
class PrinterAddress:
    """A parsed printer URI."""

    scheme: str
    host: str = ""
    port: int = DEFAULT_TCP_PORT
    vendor_id: int = 0
    product_id: int = 0
    in_ep: int = 0x82
    out_ep: int = 0x01
    path: str = ""


def _hex(value: str, what: str, uri: str) -> int:
    try:
        return int(value, 16)
    except ValueError:
        raise ValueError(f"{what} {value!r} in {uri!r} is not hexadecimal") from None


def parse_uri(uri: str) -> PrinterAddress:
    """Parse and validate a printer URI without touching any device."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "tcp":
        try:
            port = parts.port or DEFAULT_TCP_PORT
        except ValueError:
            raise ValueError(f"bad port in printer URI {uri!r}") from None
        if not parts.hostname:
            raise ValueError(f"printer URI {uri!r} has no host")
        return PrinterAddress("tcp", host=parts.hostname, port=port)
    if scheme == "usb":
        # Parsed by hand: urlsplit would read "04b8:0e15" as host "04b8" and a decimal port.
        vid, sep, pid = parts.netloc.partition(":")
        if not sep or not vid or not pid:
            raise ValueError(f"USB printer URI must be usb://VID:PID in hex, got {uri!r}")
        query = parse_qs(parts.query)
        # Some printers use other bulk endpoints than python-escpos' defaults; allow ?in_ep=0x81&out_ep=0x02.
        in_ep = _hex(query["in_ep"][0], "in_ep", uri) if "in_ep" in query else 0x82
        out_ep = _hex(query["out_ep"][0], "out_ep", uri) if "out_ep" in query else 0x01
        return PrinterAddress(
            "usb",
            vendor_id=_hex(vid, "vendor id", uri),
            product_id=_hex(pid, "product id", uri),
            in_ep=in_ep,
            out_ep=out_ep,
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"file printer URI must be file:///path/to/device, got {uri!r}")
        return PrinterAddress("file", path=parts.path)
    if scheme == "dummy":
        return PrinterAddress("dummy")
    raise ValueError(f"unsupported printer URI {uri!r}: use tcp://, usb://, file:// or dummy://")


def open_printer(uri: str, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """An unopened python-escpos printer for `uri` (Network, Usb, File or Dummy)."""
    address = parse_uri(uri)
    if address.scheme == "tcp":
        return Network(address.host, port=address.port, timeout=timeout)
    if address.scheme == "usb":
        # Checked here, not left to escpos: without pyusb its Usb.close() raises even from __del__.
        if not Usb.is_usable():
            raise PrinterUnavailable(uri, "USB printing needs the pyusb package and libusb")
        return Usb(
            address.vendor_id,
            address.product_id,
            timeout=max(1, int(timeout * 1000)),  # pyusb counts milliseconds
            in_ep=address.in_ep,
            out_ep=address.out_ep,
        )
    if address.scheme == "file":
        return File(devfile=address.path)
    return Dummy()


def send(uri: str, data: bytes, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Open the printer, write `data` unchanged, close it; PrinterUnavailable on any device failure."""
    printer = open_printer(uri, timeout)
    try:
        try:
            printer.open()
        except (DeviceNotFoundError, OSError) as exc:
            raise PrinterUnavailable(uri, _reason(exc)) from exc
        try:
            printer._raw(data)
        except OSError as exc:  # socket timeouts, broken pipes, USB errors (usb.core.USBError is an OSError)
            raise PrinterUnavailable(uri, _reason(exc)) from exc
    finally:
        try:
            printer.close()
        except OSError:
            pass  # the device already went away; the write above reported what mattered


def _reason(exc: BaseException) -> str:
    # escpos wraps the OS error in a multi-line message; keep one line for logs and the agent's status.
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
