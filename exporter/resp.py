"""The wire: RESP-packing commands, one pipelined round trip, reading its replies in bulk.

The only module that touches the socket; knows no Sidekiq key and no reply's meaning (replies
come back raw, error replies as values, for the decoders).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

try:  # redis-py internals for the bulk reply reader below; without them, the generic path
    from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
except ImportError:  # pragma: no cover - hiredis is a dependency (redis[hiredis])
    _AsyncHiredisParser = None  # type: ignore[assignment,misc]
    NOT_ENOUGH_DATA = object()
try:
    from hiredis import PushNotification as _PushNotification
except ImportError:  # pragma: no cover - hiredis < 3.2: RESP3 pushes come as plain lists
    _PushNotification = None  # type: ignore[assignment,misc]


# An argument is a str (UTF-8), bytes, int or float.
Command = tuple[str | bytes | int | float, ...]


# Reply types that are neither a push message nor a connection error: kept as they come.
_PLAIN_REPLIES = frozenset({bytes, int, list, type(None)})


class ReplyTooLarge(RedisConnectionError):
    """A poll's replies went over its `ReadBudget`: the connection is closed unread."""


@dataclass(slots=True)
class ReadBudget:
    """The bytes the replies of one poll may take from the socket, all round trips together.

    hiredis has no limit of its own on a reply's size (a server may announce a bulk string of
    2 GiB and send it): every byte it buffers is counted here as it is read, and the read
    fails once the budget is spent, so the memory a poll can take is bounded by it rather
    than by the poll timeout.
    """

    limit: int
    spent: int = field(default=0, init=False)

    def spend(self, count: int) -> None:
        self.spent += count
        if self.spent > self.limit:
            raise ReplyTooLarge(
                f"Redis replies of one poll over the limit of {self.limit} bytes; not read"
            )


def pack_commands(commands: Iterable[Command]) -> bytes:
    """RESP-encode `commands` into one buffer, as one write.

    Ours rather than redis-py's `Connection.pack_commands`: on the 1,000-queue / 100-process /
    200-class benchmark fixture (2,919 commands) redis-py took ~26 ms of a ~55 ms poll (one
    encoder call per argument, when a histogram read took 78); this took ~2.3 ms.
    """
    parts: list[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for arg in command:
            if isinstance(arg, str):
                data = arg.encode()
            elif isinstance(arg, bytes):
                data = arg
            else:  # int or float: Redis parses the decimal text (repr keeps a float's digits)
                data = repr(arg).encode()
            append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class PackCache:
    """The commands and request bytes of each named section of a poll, reused while the inputs
    they were built from are unchanged.

    Most sections repeat from poll to poll (`LLEN queue:<q>` of the same queues, a minute's
    histograms): on the 10,000-queue fixture building and packing the 20,000 queue commands
    anew took ~9 ms a poll, comparing the queue names with the last poll's ~0.2 ms. Holds only
    the sections of the latest poll (call `next_poll` before each), so it never outgrows one
    poll's batches; it caches requests, never data.
    """

    def __init__(self) -> None:
        self._previous: dict[str, tuple[object, list[Command], bytes]] = {}
        self._current: dict[str, tuple[object, list[Command], bytes]] = {}

    def next_poll(self) -> None:
        self._previous, self._current = self._current, {}

    def settle(self) -> None:
        """The poll is over: its own sections are all the next one can reuse."""
        self._previous = {}

    def section(
        self, name: str, inputs: object, build: Callable[[], list[Command]]
    ) -> tuple[list[Command], bytes]:
        """`build()` and its bytes, or the last poll's if `inputs` (which must determine what
        `build` returns) equal the last poll's of section `name`."""
        entry = self._previous.get(name)
        if entry is None or entry[0] != inputs:
            commands = build()
            entry = (inputs, commands, pack_commands(commands))
        self._current[name] = entry
        return entry[1], entry[2]


async def round_trip(
    client: Redis,
    commands: Sequence[Command],
    packed: bytes | None = None,
    budget: ReadBudget | None = None,
) -> list[object]:
    """Send `commands` in one write and read every reply; error replies come back as values.

    Unlike redis-py's `Pipeline`, replies stay raw (bytes, ints, lists), with no per-command
    response callbacks, so the decoders see exactly what Redis sent. `packed`, if given, is
    `pack_commands(commands)` already done by the caller. `budget` bounds the bytes read
    (`ReplyTooLarge` beyond it; only on the hiredis path, which is the one the daemon takes).
    """
    if not commands:
        return []
    if packed is None:
        packed = pack_commands(commands)
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(packed, check_health=False)
        bulk = await _read_replies_in_bulk(connection, len(commands), budget)
        if bulk is not None:
            return bulk
        replies: list[object] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response(disable_decoding=True))
            except ResponseError as error:
                replies.append(error)
        return replies
    except BaseException:
        # A pipeline abandoned half-read (timeout, cancellation, reset) leaves unread replies
        # on the socket: drop the connection rather than return it to the pool out of step.
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def _read_replies_in_bulk(
    connection: AbstractConnection, count: int, budget: ReadBudget | None = None
) -> list[object] | None:
    """`count` replies straight from the connection's hiredis reader; None without hiredis.

    `Connection.read_response` adds ~3 µs per reply (an `asyncio.timeout` context, checks and
    awaits per call): reading the 2,919 replies of the 1,000-queue / 100-process / 200-class
    benchmark fixture took ~13 ms that way, ~4.4 ms here (Redis's own time included), where
    the socket is read in chunks and hiredis parses them, one `gets` per reply.
    Same results as `read_response(disable_decoding=True)`: RESP2 or RESP3 shapes as hiredis
    builds them, error replies as `ResponseError` values from redis-py's own `parse_error`
    (those it maps to a `ConnectionError`, e.g. LOADING, are raised), push messages handed to
    the parser's handler, `socket_timeout` per socket read. Uses redis-py internals (checked
    against 8.1: `Connection._parser`, `_AsyncHiredisParser._reader`). Any other parser (the
    pure-Python ones) or a connection class that reads by itself (fakeredis overrides
    `read_response`) gets the generic path.
    """
    parser = getattr(connection, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if (
        _AsyncHiredisParser is None
        or not isinstance(parser, _AsyncHiredisParser)
        or reader is None
        or type(connection).read_response is not AbstractConnection.read_response
    ):
        return None
    timeout = connection.socket_timeout
    replies: list[object] = []
    append, gets, plain = replies.append, reader.gets, _PLAIN_REPLIES
    left = count
    while True:
        reply = gets(False)
        while reply is not NOT_ENOUGH_DATA:
            # The common replies first, by exact type: one check instead of two per reply.
            if type(reply) not in plain:
                if isinstance(reply, RedisConnectionError):
                    raise reply
                if _PushNotification is not None and isinstance(reply, _PushNotification):
                    await parser.handle_push_response(reply)  # type: ignore[no-untyped-call]
                    reply = gets(False)
                    continue
            append(reply)
            left -= 1
            if not left:
                return replies
            reply = gets(False)
        buffered = reader.len()
        try:
            async with asyncio.timeout(timeout):
                # Reads up to the parser's read size and feeds hiredis; ConnectionError on EOF.
                await parser.read_from_socket()  # type: ignore[no-untyped-call]
        except TimeoutError:
            raise RedisTimeoutError("Timeout reading from Redis") from None
        except OSError as error:
            raise RedisConnectionError(f"Error while reading from Redis: {error}") from error
        if budget is not None:
            # One feed since `buffered` was taken: the growth is exactly the bytes just read.
            budget.spend(reader.len() - buffered)
