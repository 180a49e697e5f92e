"""The web config's middleware on every path: rate limit, client-certificate SANs, basic auth
(bcrypt, off the event loop) and extra response headers. Knows nothing of the file's format
(web/config.py builds it) or of Sidekiq.
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

_BCRYPT_MAX_PASSWORD: Final = 72  # bcrypt only ever uses the first 72 bytes
_AUTH_CACHE_SIZE: Final = 100  # successful checks remembered (as exporter-toolkit)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: a token bucket of `burst` requests, refilled one per `interval` seconds."""

    burst: int
    interval: float


def middlewares(
    *,
    users: Mapping[str, str],
    headers: Mapping[str, str],
    rate_limit: RateLimit | None,
    allowed_sans: Sequence[str] | None,
) -> tuple[Middleware, ...]:
    """The aiohttp middleware enforcing these rules on every path; none if there are none.

    `users` maps user names to bcrypt hashes; `headers` are added to every response;
    `allowed_sans` (None: no check) lists the SANs a verified client certificate may carry.
    """
    if not (users or headers or rate_limit or allowed_sans is not None):
        return ()
    guard = _Guard(users=users, headers=headers, rate_limit=rate_limit, allowed_sans=allowed_sans)

    @web.middleware
    async def web_config_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await guard.handle(request, handler)

    return (web_config_guard,)


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


class _Guard:
    """The middleware: rate limit, client certificate SANs, basic auth, extra headers.

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
        # bcrypt is CPU work: off the event loop, one at a time (as exporter-toolkit).
        self._bcrypt_lock = asyncio.Lock()

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
            return web.Response(status=429, text="Too Many Requests\n")
        if self._sans is not None and not _has_allowed_san(request, self._sans):
            return web.Response(status=403, text="Forbidden\n")
        if self._users and not await self._authenticated(request):
            return web.Response(
                status=401, text="Unauthorized\n", headers={hdrs.WWW_AUTHENTICATE: "Basic"}
            )
        return None

    async def _authenticated(self, request: web.Request) -> bool:
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
        async with self._bcrypt_lock:
            matches = await asyncio.to_thread(_bcrypt_matches, password, hashed or self._decoy)
        if not (matches and hashed is not None):
            return False
        if len(self._verified) >= _AUTH_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]
        self._verified[digest] = None
        return True


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
