"""What a wake-up costs on this box: `python -m bench.wakeup [RATES] [SECONDS]`.

Two processes bounce one byte over loopback TCP, back to back or at fixed rates (the sender sleeps
between round trips), and each reports the CPU time it used per round trip. The work per round trip
is the same at every rate (a `send` and a `recv` each); what changes is whether the receiver was
already running or had gone idle and must be woken. The stack's processes do the same for every
message of a share, so the difference is the part of a share's CPU that a steady load adds and the
ceiling does not pay.
"""

from __future__ import annotations

import os
import socket
import sys
import time

DEFAULT_RATES = (0, 100, 1000, 5000)  # 0: back to back


def _echo(listener: socket.socket, report: int) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while conn.recv(64):
        conn.sendall(b"x")
    os.write(report, f"{time.process_time()}\n".encode())
    os._exit(0)


def round_trips(rate: int, seconds: float) -> tuple[int, float, float]:
    """(round trips, sender's CPU µs per round trip, echoing process's CPU µs per round trip)."""
    listener = socket.create_server(("127.0.0.1", 0))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _echo(listener, write_end)
    os.close(write_end)
    sock = socket.create_connection(listener.getsockname())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    n, cpu0, start = 0, time.process_time(), time.perf_counter()
    while (now := time.perf_counter()) < start + seconds:
        if rate and (due := start + n / rate) > now:
            time.sleep(due - now)
        sock.sendall(b"x")
        sock.recv(64)
        n += 1
    cpu = time.process_time() - cpu0
    sock.close()
    os.waitpid(pid, 0)
    echo_cpu = float(os.read(read_end, 64).decode())
    os.close(read_end)
    listener.close()
    return n, cpu * 1e6 / n, echo_cpu * 1e6 / n


def main() -> None:
    rates = [int(r) for r in sys.argv[1].split(",")] if len(sys.argv) > 1 else list(DEFAULT_RATES)
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    for rate in rates:
        n, sender, echo = round_trips(rate, seconds)
        label = f"{rate}/s" if rate else "back to back"
        print(
            f"{label:>13}: {n:>6} round trips; CPU per round trip: sender {sender:.1f} µs, echo {echo:.1f} µs"
        )


if __name__ == "__main__":
    main()
