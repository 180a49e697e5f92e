"""The web config's middleware on every path: rate limit, client-certificate SANs, basic auth
(bcrypt, off the event loop, a few checks at a time, fair between clients) and extra response
headers. Knows nothing of the file's format (web/config.py builds it) or of Sidekiq.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from exporter.logs import HTTP_CREDENTIAL_QUEUE_FULL, Throttle, get_logger
from exporter.web.server import LIMIT_CREDENTIAL_QUEUE, HttpCounters

log = get_logger(__name__)

_BCRYPT_MAX_PASSWORD: Final = 72  # bcrypt only ever uses the first 72 bytes
_AUTH_CACHE_SIZE: Final = 100  # successful checks remembered (as exporter-toolkit)
# bcrypt checks of credentials not remembered yet (a first scrape, or a wrong password): this
# many at once in worker threads, so one slow check never holds up the next client, while the
# rest of the machine keeps its cores for polling and scrapes.
CHECK_WORKERS: Final = 2
# Checks waiting for a worker, per source (a client's IPv4 address or IPv6 /64) and in all;
# one more is refused at once with 429. A free worker goes to the source with the fewest
# checks running, so a client flooding wrong passwords delays another source's check by at
# most the rest of one check, not by its queue.
MAX_WAITING_PER_SOURCE: Final = 4
MAX_WAITING: Final = 32


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: a token bucket of `burst` requests, refilled one per `interval` seconds."""

    burst: int
    interval: float


def build_guard(
    *,
    users: Mapping[str, str],
    headers: Mapping[str, str],
    rate_limit: RateLimit | None,
    allowed_sans: Sequence[str] | None,
    counters: HttpCounters | None = None,
) -> Guard | None:
    """The guard enforcing these rules on every path; None if there are none.

    `users` maps user names to bcrypt hashes; `headers` are added to every response;
    `allowed_sans` (None: no check) lists the SANs a verified client certificate may carry.
    """
    if not (users or headers or rate_limit or allowed_sans is not None):
        return None
    return Guard(
        users=users,
        headers=headers,
        rate_limit=rate_limit,
        allowed_sans=allowed_sans,
        counters=counters or HttpCounters(),
    )


class _TokenBucket:
    """Go's rate.Limiter(rate.Every(interval), burst).Allow(): starts full."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = limit
        self._clock = clock
        self._tokens = float(limit.burst)
        self._last = clock()

    def allow(self) -> bool:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        self._tokens = min(float(self._limit.burst), self._tokens + elapsed / self._limit.interval)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class Guard:
    """The middleware's rules: rate limit, client certificate SANs, basic auth, extra headers.

    Every path is guarded, the landing page and `/-/healthy`, `/-/ready` included, as
    exporter-toolkit guards everything it serves.
    """

    def __init__(
        self,
        *,
        users: Mapping[str, str],
        headers: Mapping[str, str],
        rate_limit: RateLimit | None,
        allowed_sans: Sequence[str] | None,
        counters: HttpCounters,
    ) -> None:
        self._headers = dict(headers)
        self._limiter = _TokenBucket(rate_limit) if rate_limit else None
        self._sans = allowed_sans
        self._users = [(name.encode(), hashed.encode()) for name, hashed in users.items()]
        # An unknown user is checked against a real hash, so it costs as much as a known one
        # and response times don't tell which user names exist.
        self._decoy = self._users[0][1] if self._users else b""
        # Successful checks, as keyed digests of (user, password): a scrape every few seconds
        # must not pay bcrypt's deliberate cost each time.
        self._cache_key = secrets.token_bytes(32)
        self._verified: dict[bytes, None] = {}
        self._checks = CredentialChecks()
        self._counters = counters
        self._queue_full_log = Throttle()

    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            # `is None`, not `or`: before aiohttp 3.12 a Response without state is falsy
            # (it is a MutableMapping), which would let every denied request through.
            denial = await self._denial(request)
            response = denial if denial is not None else await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(self._headers)
            raise
        response.headers.update(self._headers)
        return response

    async def _denial(self, request: web.Request) -> web.Response | None:
        if self._limiter is not None and not self._limiter.allow():
            return _too_many_requests()
        if self._sans is not None and not _has_allowed_san(request, self._sans):
            return web.Response(status=403, text="Forbidden\n")
        if self._users:
            authenticated = await self._authenticated(request)
            if authenticated is None:
                self._queue_full()
                return _too_many_requests()
            if not authenticated:
                return web.Response(
                    status=401, text="Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: "Basic"}
                )
        return None

    async def _authenticated(self, request: web.Request) -> bool | None:
        """True or False; None when the check was refused (too many waiting)."""
        credentials = _basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
        if credentials is None:
            return False
        user, password = credentials
        digest = hmac.digest(
            self._cache_key, len(user).to_bytes(4, "big") + user + password, hashlib.sha256
        )
        if digest in self._verified:
            return True
        hashed = None
        for name, candidate in self._users:  # no early exit: the same time for every name
            if hmac.compare_digest(name, user):
                hashed = candidate
        matches = await self._checks.check(
            client_source(request.remote), password, hashed or self._decoy
        )
        if matches is None:
            return None
        if not (matches and hashed is not None):
            return False
        if len(self._verified) >= _AUTH_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = None
        return True

    def _queue_full(self) -> None:
        self._counters.limit_hits[LIMIT_CREDENTIAL_QUEUE] += 1
        held = self._queue_full_log.due()
        if held is not None:
            log.warning(
                HTTP_CREDENTIAL_QUEUE_FULL,
                waiting=self._checks.waiting,
                more_since_last_line=held,
            )


def _too_many_requests() -> web.Response:
    return web.Response(status=429, text="Too Many Requests\n")


class CredentialChecks:
    """bcrypt checks, `workers` at a time in worker threads; at most `per_source` waiting per
    source and `max_waiting` in all, beyond which a check is refused at once.

    A free worker goes to the waiting source with the fewest checks running, sources with as
    many taking turns (fair queueing with equal costs): a source's check waits for at most
    one running check to end, and one check of each source that was waiting before it, however
    many checks those sources queued.
    """

    def __init__(
        self,
        workers: int = CHECK_WORKERS,
        max_waiting: int = MAX_WAITING,
        per_source: int = MAX_WAITING_PER_SOURCE,
        check: Callable[[bytes, bytes], bool] | None = None,
    ) -> None:
        self._workers = workers
        self._max_waiting = max_waiting
        self._per_source = per_source
        self._check = check or _bcrypt_matches
        self._busy = 0  # workers taken, by checks running or about to
        self._running: Counter[str] = Counter()  # the same, by source
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}  # in turn order
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def check(self, source: str, password: bytes, hashed: bytes) -> bool | None:
        """Whether `password` matches `hashed`; None, at once, if too many checks wait."""
        if self._busy < self._workers and not self._queues:
            self._take_worker(source)
        else:
            queue = self._queues.get(source)
            if self._waiting >= self._max_waiting or (
                queue is not None and len(queue) >= self._per_source
            ):
                return None
            await self._wait_turn(source)
        # A check runs to its end even if its client goes away: a worker stays taken until then.
        work = asyncio.get_running_loop().run_in_executor(None, self._check, password, hashed)
        work.add_done_callback(lambda _: self._finished(source))
        return await asyncio.shield(work)

    async def _wait_turn(self, source: str) -> None:
        turn = asyncio.get_running_loop().create_future()
        self._queues.setdefault(source, deque()).append(turn)
        self._waiting += 1
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # given a worker, then cancelled
                self._finished(source)
            else:
                self._leave(source, turn)
            raise

    def _leave(self, source: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(source)
        if queue is not None and turn in queue:
            queue.remove(turn)
            self._waiting -= 1
            if not queue:
                del self._queues[source]

    def _take_worker(self, source: str) -> None:
        self._busy += 1
        self._running[source] += 1

    def _finished(self, source: str) -> None:
        self._busy -= 1
        self._running[source] -= 1
        if not self._running[source]:
            del self._running[source]
        while self._busy < self._workers and self._queues:
            source = min(self._queues, key=self._running.__getitem__)  # first of the fewest
            queue = self._queues.pop(source)
            turn = queue.popleft()
            self._waiting -= 1
            if queue:
                self._queues[source] = queue  # to the back: the other sources go first
            if turn.cancelled():  # its client went away; its task has yet to see that
                continue
            self._take_worker(source)
            turn.set_result(None)


def client_source(remote: str | None) -> str:
    """Whose credential check this is, for taking turns: the IPv4 address, or the /64 of an
    IPv6 address (one host can use as many addresses of its /64 as it likes)."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return remote or ""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _basic_credentials(header: str) -> tuple[bytes, bytes] | None:
    """(user, password) from `Authorization: Basic ...`, as Go's Request.BasicAuth reads it."""
    if header[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:], validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    return (user, password) if colon else None


def _bcrypt_matches(password: bytes, hashed: bytes) -> bool:
    # Imported at the first check: a web config without basic_auth_users never loads bcrypt.
    import bcrypt

    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], hashed)
    except ValueError:
        return False


def _has_allowed_san(request: web.Request, allowed: Sequence[str]) -> bool:
    """True if the client's verified certificate has a SAN listed in `allowed` (exactly)."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return False
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            # Written as Go prints addresses: 2001:db8::1, not 2001:DB8:0:0:0:0:0:1.
            with contextlib.suppress(ValueError):
                value = str(ipaddress.ip_address(value.strip()))
        if value in allowed:
            return True
    return False
