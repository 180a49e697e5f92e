"""The floor: our poll's exact command bytes, one write per round trip on a plain blocking socket,
replies parsed by `hiredis.Reader` and nothing else (no decoding, no model, no asyncio).

The commands are captured from a real poll of the same fixture and packed once, outside the
timed loop, so the floor measures only what no client can avoid: the write, Redis executing the
commands, the bytes coming back and turning RESP into Python objects.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import hiredis

from exporter.resp import Command, pack_commands


@dataclass(frozen=True)
class FloorTimes:
    wall: list[float]
    cpu: list[float]
    round_trips: int
    commands: int
    reply_bytes: int


def _read_replies(sock: socket.socket, reader: hiredis.Reader, count: int) -> int:
    """Read and parse `count` replies; returns the bytes received."""
    received = parsed = 0
    while parsed < count:
        reply = reader.gets()
        while reply is not False:
            parsed += 1
            if parsed == count:
                break
            reply = reader.gets()
        if parsed == count:
            break
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        received += len(chunk)
        reader.feed(chunk)
    return received


def time_floor(
    url: str, batches: list[list[Command]], *, min_iterations: int = 15, budget: float = 2.0
) -> FloorTimes:
    """Time the captured round trips on one connection, repeatedly."""
    parts = urlsplit(url)
    packed = [(pack_commands(batch), len(batch)) for batch in batches]
    wall: list[float] = []
    cpu: list[float] = []
    reply_bytes = 0
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = hiredis.Reader(replyError=Exception)  # error replies as values, like ours
        for _ in range(3):  # warm-up
            for data, count in packed:
                sock.sendall(data)
                _read_replies(sock, reader, count)
        deadline = time.perf_counter() + budget
        while len(wall) < min_iterations or time.perf_counter() < deadline:
            w0, c0 = time.perf_counter(), time.process_time()
            received = 0
            for data, count in packed:
                sock.sendall(data)
                received += _read_replies(sock, reader, count)
            c1, w1 = time.process_time(), time.perf_counter()
            wall.append(w1 - w0)
            cpu.append(c1 - c0)
            reply_bytes = received
            if len(wall) >= 10 * min_iterations:
                break
    return FloorTimes(
        wall=wall,
        cpu=cpu,
        round_trips=len(packed),
        commands=sum(count for _, count in packed),
        reply_bytes=reply_bytes,
    )
