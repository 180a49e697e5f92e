"""A loopback TCP delay line: every chunk is forwarded `delay` seconds after it arrived, each way.

    python -m bench.delay_proxy --upstream 127.0.0.1:6379 --delay 0.0005 --port-file PATH

The benchmark's stand-in for `tc qdisc … netem delay 0.5ms` on both ends of a veth pair, for
kernels without the `sch_netem` module (this machine's, for one). Like netem it delays data,
not connections, and keeps order; unlike netem it adds its own forwarding cost (a thread
wake-up and a copy, ~0.1 ms per round trip here), which the benchmark measures and reports.

Blocking sockets and two threads per direction, in a process of its own: `time.sleep` is
precise to ~0.1 ms, where asyncio's epoll timeouts would round 0.5 ms up to whole milliseconds,
and the proxy never competes for the GIL with the client being measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import signal
import socket
import threading
import time

CHUNK = 1 << 16


def _pipe(source: socket.socket, sink: socket.socket, delay: float) -> None:
    """Copy source → sink, each chunk held until `delay` after it was received."""
    queue: collections.deque[tuple[float, bytes]] = collections.deque()
    ready = threading.Condition()

    def receive() -> None:
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                data = b""
            with ready:
                queue.append((time.perf_counter() + delay, data))
                ready.notify()
            if not data:
                return

    def send() -> None:
        while True:
            with ready:
                while not queue:
                    ready.wait()
                due, data = queue.popleft()
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return

    threading.Thread(target=receive, daemon=True).start()
    threading.Thread(target=send, daemon=True).start()


def serve(upstream: tuple[str, int], delay: float, port_file: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with open(port_file + ".tmp", "w") as out:
        out.write(str(listener.getsockname()[1]))
    os.replace(port_file + ".tmp", port_file)
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(upstream)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _pipe(client, server, delay)
        _pipe(server, client, delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT")
    parser.add_argument("--delay", type=float, default=0.0005, help="seconds, each way")
    parser.add_argument("--port-file", required=True, help="where to write the listening port")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        serve((host, int(port)), args.delay, args.port_file)


if __name__ == "__main__":
    main()
