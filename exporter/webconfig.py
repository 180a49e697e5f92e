"""`--web.config.file`: TLS and basic auth for the HTTP server, in exporter-toolkit's format.

Go exporters share one web configuration file (prometheus/exporter-toolkit,
`docs/web-configuration.md`); a file `promtool check web-config` accepts works here unchanged.
The parts this module cannot do exactly as Go's crypto/tls does are refused at startup with a
reason, never silently weakened (see docs/security.md, "HTTP (/metrics)").

- `load_web_config(path)` parses and validates the file, including loading the certificate and
  key, so a bad file stops the exporter at startup with a one-line `ConfigError` naming the key.
- `WebConfig.create_ssl_context()` gives the context for the listening socket (None: plain
  HTTP). A new `cert_file`/`key_file` pair is picked up on the next TLS handshake, as
  exporter-toolkit does, so certificates can be rotated without a restart.
- `WebConfig.middlewares()` gives the aiohttp middleware enforcing basic auth, the client
  certificate SAN allow-list, the rate limit and the extra response headers on every path.

Everything else in the file is read once, at startup.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import ssl
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import bcrypt
from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from exporter import config_file
from exporter.config_file import ConfigError
from exporter.logs import WEB_CERTIFICATE_RELOAD_FAILED, WEB_CERTIFICATE_RELOADED, get_logger

log = get_logger(__name__)

_TOP_KEYS: Final = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
_TLS_KEYS: Final = (
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
    "client_allowed_sans",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
)
# The keys whose values are plain text; any of them switches TLS on.
_TLS_TEXT_KEYS: Final = (
    "cert_file",
    "key_file",
    "cert",
    "key",
    "client_ca_file",
    "client_ca",
    "client_auth_type",
)
_HTTP_KEYS: Final = ("http2", "headers")
_RATE_LIMIT_KEYS: Final = ("burst", "interval")

# client_auth_type -> what the server asks of clients. Go's RequestClientCert asks for a
# certificate and then ignores it; not asking at all has the same effect on who gets in.
_CLIENT_AUTH: Final = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Accepted by exporter-toolkit, impossible with Python's ssl module: it cannot require a
# client certificate without also verifying it against a CA.
_UNSUPPORTED_CLIENT_AUTH: Final = ("RequireAnyClientCert", "RequireClientCert")

_TLS_VERSIONS: Final = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}

# Go's tls.CipherSuites() names (what exporter-toolkit accepts) -> OpenSSL names. Like Go,
# the list only applies up to TLS 1.2; the TLS 1.3 suites are accepted and not configurable.
_CIPHER_SUITES: Final = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
_TLS13_CIPHER_SUITES: Final = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
)
_CURVES: Final = {
    "CurveP256": "prime256v1",
    "CurveP384": "secp384r1",
    "CurveP521": "secp521r1",
    "X25519": "X25519",
}

# http_server_config.headers: the names exporter-toolkit allows, with their allowed values
# (empty: any value).
_HEADERS: Final[Mapping[str, tuple[str, ...]]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}

# What Go's bcrypt accepts and Python's bcrypt can check: $2a$, $2b$, $2x$ or $2y$, a two-digit
# cost, then 22 characters of salt and 31 of hash.
_BCRYPT_RE: Final = re.compile(r"\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}")
_BCRYPT_COSTS: Final = range(4, 32)
_BCRYPT_MAX_PASSWORD: Final = 72  # bcrypt only ever uses the first 72 bytes
_AUTH_CACHE_SIZE: Final = 100  # successful checks remembered (as exporter-toolkit)

_GO_DURATION_RE: Final = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_GO_DURATION_UNITS: Final = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


# --------------------------------------------------------------------------- the parsed file


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """`tls_server_config`, validated; file paths are absolute or relative to the cwd."""

    cert_file: str  # "" when the certificate is inline (`cert`)
    key_file: str  # "" when the key is inline (`key`)
    cert: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    client_auth_type: str = "NoClientCert"
    # The client CAs in PEM, read once at startup (from `client_ca_file` or `client_ca`).
    client_ca: str = field(default="", repr=False)
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    openssl_ciphers: tuple[str, ...] = ()  # empty: OpenSSL's defaults
    prefer_server_cipher_suites: bool = True
    openssl_curves: tuple[str, ...] = ()

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return _CLIENT_AUTH[self.client_auth_type]


@dataclass(frozen=True, slots=True)
class RateLimit:
    """`rate_limit`: a token bucket of `burst` requests, refilled one per `interval` seconds."""

    burst: int
    interval: float


@dataclass(frozen=True, slots=True)
class WebConfig:
    """The web configuration file, validated."""

    path: str
    tls: TLSServerConfig | None = None  # None: plain HTTP
    http2: bool = True  # accepted for compatibility; aiohttp serves HTTP/1.1 only
    headers: Mapping[str, str] = field(default_factory=dict)
    basic_auth_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    rate_limit: RateLimit | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """What is switched on, for the startup log line (no secrets)."""
        return {
            "tls": self.tls is not None,
            "client_auth_type": self.tls.client_auth_type if self.tls else None,
            "basic_auth_users": len(self.basic_auth_users),
            "rate_limit": self.rate_limit is not None,
        }

    def create_ssl_context(self) -> ssl.SSLContext | None:
        """The listening socket's TLS context, or None for plain HTTP.

        When the certificate and key are files, every handshake checks whether they changed
        (a `stat` of each) and serves the new pair once both load; until then the old one.
        """
        if self.tls is None:
            return None
        context = _new_ssl_context(self.tls)
        if self.tls.cert_file or self.tls.key_file:
            context.sni_callback = _CertificateReloader(self.tls, context)
        return context

    def middlewares(self) -> tuple[Middleware, ...]:
        """The aiohttp middleware enforcing this file on every path, if it asks for anything."""
        sans = self.tls.client_allowed_sans if self.tls else None
        if not (self.basic_auth_users or self.headers or self.rate_limit or sans is not None):
            return ()
        guard = _Guard(self)

        @web.middleware
        async def web_config_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await guard.handle(request, handler)

        return (web_config_guard,)


def load_web_config(path: str | None) -> WebConfig | None:
    """Parse and validate the file at `path` (None: no file, no web config).

    Also loads the certificate, key and client CAs once, so every problem shows at startup.
    """
    if path is None:
        return None
    try:
        config = parse_web_config(config_file.read_text(path), path)
        config.create_ssl_context()
    except ConfigError as exc:
        raise ConfigError(f"web config {path!r}: {exc}") from None
    return config


def parse_web_config(text: bytes | str, path: str) -> WebConfig:
    """Validate the YAML `text` of the file at `path`; relative file names in it are
    relative to the file's directory, as exporter-toolkit has them.

    Errors name the key at fault: `tls_server_config.client_auth_type: ...`.
    """
    top = config_file.mapping(config_file.load_yaml_as_go(text), "the file")
    _known_keys(top, _TOP_KEYS, "")
    base_dir = os.path.dirname(path)

    def section(key: str) -> dict[str, object]:
        return config_file.mapping(top.get(key), key)

    return WebConfig(
        path=path,
        tls=_tls_config(section("tls_server_config"), base_dir),
        **_http_config(section("http_server_config")),
        basic_auth_users=_users(section("basic_auth_users")),
        rate_limit=_rate_limit(section("rate_limit")),
    )


# --------------------------------------------------------------------------- sections


def _known_keys(mapping: Mapping[str, object], known: Sequence[str], where: str) -> None:
    for key in mapping:
        if key not in known:
            raise ConfigError(f"{where}{key}: unknown key (known here: {', '.join(known)})")


def _tls_config(section: dict[str, object], base_dir: str) -> TLSServerConfig | None:
    where = "tls_server_config."
    _known_keys(section, _TLS_KEYS, where)
    text = {key: config_file.text(section.get(key), where + key) for key in _TLS_TEXT_KEYS}
    sans = config_file.texts(section.get("client_allowed_sans"), where + "client_allowed_sans")
    # As exporter-toolkit: TLS is on once a certificate, key, client CA or client_auth_type
    # is given; other keys alone (min_version...) leave plain HTTP.
    if not any(text.values()):
        return None
    for file_key, inline_key in (("cert_file", "cert"), ("key_file", "key")):
        if not text[file_key] and not text[inline_key]:
            raise ConfigError(f"{where}{file_key}: missing (TLS needs a certificate and a key)")
        if text[file_key] and text[inline_key]:
            raise ConfigError(f"{where}{inline_key}: give {file_key} or {inline_key}, not both")
    if text["client_ca_file"] and text["client_ca"]:
        raise ConfigError(f"{where}client_ca: give client_ca_file or client_ca, not both")
    cert_file, key_file, ca_file = (
        _joined(base_dir, text[key]) for key in ("cert_file", "key_file", "client_ca_file")
    )
    client_auth = _client_auth_type(text["client_auth_type"] or "NoClientCert", where)
    client_ca = _read_pem(ca_file, where + "client_ca_file") if ca_file else text["client_ca"]
    if client_ca and client_auth == "NoClientCert":
        raise ConfigError(
            f"{where}client_auth_type: client CAs are given but client_auth_type is "
            "NoClientCert (use RequireAndVerifyClientCert to check client certificates)"
        )
    if sans is not None and client_auth != "RequireAndVerifyClientCert":
        raise ConfigError(
            f"{where}client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert"
        )
    min_version = _tls_version(section.get("min_version"), where + "min_version", "TLS12")
    max_version = _tls_version(section.get("max_version"), where + "max_version", "TLS13")
    if min_version > max_version:
        raise ConfigError(f"{where}min_version: above max_version, no TLS version is left")
    return TLSServerConfig(
        cert_file=cert_file,
        key_file=key_file,
        cert=text["cert"],
        key=text["key"],
        client_auth_type=client_auth,
        client_ca=client_ca,
        client_allowed_sans=sans,
        min_version=min_version,
        max_version=max_version,
        openssl_ciphers=_ciphers(section.get("cipher_suites"), where + "cipher_suites"),
        prefer_server_cipher_suites=config_file.go_boolean(
            section.get("prefer_server_cipher_suites"), where + "prefer_server_cipher_suites", True
        ),
        openssl_curves=_curves(section.get("curve_preferences"), where + "curve_preferences"),
    )


def _joined(base_dir: str, path: str) -> str:
    """`path` relative to the config file's directory (exporter-toolkit's JoinDir)."""
    if not path or os.path.isabs(path):
        return path
    return os.path.join(base_dir, path)


def _client_auth_type(value: str, where: str) -> str:
    if value in _UNSUPPORTED_CLIENT_AUTH:
        raise ConfigError(
            f"{where}client_auth_type: {value} (any certificate, unverified) cannot be done "
            "with Python's ssl module; use RequireAndVerifyClientCert with client_ca_file"
        )
    if value not in _CLIENT_AUTH:
        raise ConfigError(
            f"{where}client_auth_type: unknown value {value!r} (use one of: "
            f"{', '.join(_CLIENT_AUTH)})"
        )
    return value


def _read_pem(path: str, where: str) -> str:
    text = _read(path, where)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{where}: no PEM certificate in {path!r}")
    return text


def _read(path: str, where: str) -> str:
    try:
        return config_file.read_text(path)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _tls_version(value: object, where: str, default: str) -> ssl.TLSVersion:
    name = config_file.text(value, where) or default
    if name not in _TLS_VERSIONS:
        raise ConfigError(
            f"{where}: unknown TLS version {name!r} (use one of: {', '.join(_TLS_VERSIONS)})"
        )
    return _TLS_VERSIONS[name]


def _ciphers(value: object, where: str) -> tuple[str, ...]:
    names = config_file.texts(value, where) or ()
    for name in names:
        if name not in _CIPHER_SUITES and name not in _TLS13_CIPHER_SUITES:
            raise ConfigError(f"{where}: unknown cipher suite {name!r} (use Go's names)")
    return tuple(_CIPHER_SUITES[name] for name in names if name in _CIPHER_SUITES)


def _curves(value: object, where: str) -> tuple[str, ...]:
    names = config_file.texts(value, where) or ()
    for name in names:
        if name not in _CURVES:
            raise ConfigError(f"{where}: unknown curve {name!r} (use one of: {', '.join(_CURVES)})")
    return tuple(_CURVES[name] for name in names)


def _http_config(section: dict[str, object]) -> dict[str, Any]:
    where = "http_server_config."
    _known_keys(section, _HTTP_KEYS, where)
    headers = config_file.mapping(section.get("headers"), where + "headers")
    for name, value in headers.items():
        if name not in _HEADERS:
            raise ConfigError(
                f"{where}headers.{name}: this header cannot be set (use one of: "
                f"{', '.join(_HEADERS)})"
            )
        text = config_file.text(value, f"{where}headers.{name}")
        allowed = _HEADERS[name]
        if allowed and text not in allowed:
            raise ConfigError(
                f"{where}headers.{name}: invalid value {text!r} (use {' or '.join(allowed)})"
            )
    return {
        "http2": config_file.go_boolean(section.get("http2"), where + "http2", True),
        # A blank value means "unset" in exporter-toolkit's documentation.
        "headers": {name: str(value) for name, value in headers.items() if value},
    }


def _users(section: dict[str, object]) -> dict[str, str]:
    users = {}
    for name, value in section.items():
        where = f"basic_auth_users.{name}"
        hashed = config_file.text(value, where)
        match = _BCRYPT_RE.fullmatch(hashed)
        if match is None:
            # Never echo the value: it is a password hash, or a password given by mistake.
            raise ConfigError(
                f"{where}: not a bcrypt hash (expected $2y$10$ and 53 more characters; see "
                "docs/security.md for how to make one)"
            )
        if int(match.group(1)) not in _BCRYPT_COSTS:
            raise ConfigError(f"{where}: bcrypt cost {match.group(1)} is outside 4-31")
        users[name] = hashed
    return users


def _rate_limit(section: dict[str, object]) -> RateLimit | None:
    where = "rate_limit."
    _known_keys(section, _RATE_LIMIT_KEYS, where)
    interval_text = config_file.text(section.get("interval"), where + "interval")
    interval = parse_go_duration(interval_text or "0")
    burst_text = config_file.text(section.get("burst"), where + "burst") or "0"
    try:
        burst = int(burst_text, 0)
    except ValueError:
        raise ConfigError(f"{where}burst: expected a whole number, got {burst_text!r}") from None
    # As Go's rate.Every: a zero or negative interval means no limit.
    return RateLimit(burst=max(burst, 0), interval=interval) if interval > 0 else None


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration (`time.ParseDuration`: `1h30m`, `500ms`, `1.5s`, `0`)."""
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.removeprefix("+"))
    if body == "0" or body.isdigit():  # yaml.v2 reads a bare integer as nanoseconds
        return sign * int(body) * 1e-9
    pieces = _GO_DURATION_RE.findall(body)
    if not pieces or "".join(number + unit for number, unit in pieces) != body:
        raise ConfigError(f"invalid duration {text!r} (use Go's form: 500ms, 10s, 1m30s)")
    return sign * sum(float(number) * _GO_DURATION_UNITS[unit] for number, unit in pieces)


# --------------------------------------------------------------------------- TLS


def _new_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context for `tls`, with the certificate and key loaded now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # TLS10/TLS11 are deprecated, but the file asks for them
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = tls.min_version
        context.maximum_version = tls.max_version
    if tls.openssl_ciphers:
        context.set_ciphers(":".join(tls.openssl_ciphers))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.openssl_curves:
        # Python's ssl can set one group, not a preference list: the most preferred one.
        context.set_ecdh_curve(tls.openssl_curves[0])
    context.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
    _load_key_pair(context, tls)
    context.verify_mode = tls.verify_mode
    if tls.verify_mode != ssl.CERT_NONE:
        if tls.client_ca:
            context.load_verify_locations(cadata=tls.client_ca)
        else:
            # Go verifies against the system roots when no client CA is given.
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def _load_key_pair(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    where = "tls_server_config."
    cert_where = where + ("cert_file" if tls.cert_file else "cert")
    key_where = where + ("key_file" if tls.key_file else "key")
    cert_text = _file_or_inline(tls.cert_file, tls.cert, cert_where)
    key_text = _file_or_inline(tls.key_file, tls.key, key_where)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(f"{cert_where}: no PEM certificate in it")
    if "ENCRYPTED" in key_text:
        raise ConfigError(f"{key_where}: encrypted private keys are not supported")
    if "PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"{key_where}: no PEM private key in it")
    with _pem_path(tls.cert_file, cert_text) as cert, _pem_path(tls.key_file, key_text) as key:
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(
                    f"{key_where}: the key does not belong to the certificate"
                ) from None
            raise ConfigError(
                f"{cert_where}: cannot load the certificate and key: {exc.reason or exc}"
            ) from None


def _file_or_inline(path: str, inline: str, where: str) -> str:
    return _read(path, where) if path else inline


def _no_password() -> bytes:
    raise ConfigError("tls_server_config.key_file: encrypted private keys are not supported")


@contextlib.contextmanager
def _pem_path(path: str, text: str) -> Iterator[str]:
    """A file name for `text`: `path` itself, or (inline PEM) a file only this process sees."""
    if path:
        yield path
        return
    if hasattr(os, "memfd_create"):  # Linux: no file on disk, works on a read-only root
        fd = os.memfd_create("web-config-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as file:  # created 0600
        file.write(text)
        file.flush()
        yield file.name


class _CertificateReloader:
    """The listening context's SNI callback: serve the newest certificate/key pair.

    It runs at every handshake, before the certificate is sent. When the files' stat changed
    it builds a new context from them; if they don't load (a pair caught half-written) the
    previous pair stays in use and the same files are not retried until they change again.
    """

    def __init__(self, tls: TLSServerConfig, context: ssl.SSLContext) -> None:
        self._tls = tls
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file) if p)
        self._context = context
        self._stamp = self._stat()
        self._failed: object = None

    def _stat(self) -> object:
        try:
            stats = [os.stat(path) for path in self._paths]
        except OSError:
            return None
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def __call__(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        try:
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp and stamp != self._failed:
                self._reload(stamp)
            if connection.context is not self._context:
                connection.context = self._context
        except Exception:  # never fail a handshake over this; the old pair still works
            log.exception(WEB_CERTIFICATE_RELOAD_FAILED, cert_file=self._tls.cert_file)

    def _reload(self, stamp: object) -> None:
        try:
            fresh = _new_ssl_context(self._tls)
        except (ConfigError, ssl.SSLError, OSError) as exc:
            self._failed = stamp
            log.warning(
                WEB_CERTIFICATE_RELOAD_FAILED, cert_file=self._tls.cert_file, error=str(exc)
            )
            return
        self._context, self._stamp, self._failed = fresh, stamp, None
        log.info(WEB_CERTIFICATE_RELOADED, cert_file=self._tls.cert_file)


# --------------------------------------------------------------------------- HTTP


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

    def __init__(self, config: WebConfig) -> None:
        self._headers = dict(config.headers)
        self._limiter = _TokenBucket(config.rate_limit) if config.rate_limit else None
        self._sans = config.tls.client_allowed_sans if config.tls else None
        self._users = [
            (name.encode(), hashed.encode()) for name, hashed in config.basic_auth_users.items()
        ]
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
