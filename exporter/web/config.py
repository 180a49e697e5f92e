"""`--web.config.file`: exporter-toolkit's web configuration file, parsed and validated.

A file `promtool check web-config` accepts works unchanged; what cannot be done as Go does is
refused at start with a one-line reason naming the key. Builds the TLS context (web/tls.py)
and the middleware (web/auth.py) from what it parsed, and swaps both when the file is read
again (SIGHUP); serves nothing itself.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from exporter import config_file
from exporter.config_file import ConfigError
from exporter.logs import WEB_CONFIG_RELOAD_FAILED, WEB_CONFIG_RELOADED, get_logger
from exporter.web import auth, tls
from exporter.web.auth import RateLimit
from exporter.web.server import HttpCounters
from exporter.web.tls import CLIENT_AUTH, TLSServerConfig

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
        """The listening socket's TLS context (web/tls.py), or None for plain HTTP."""
        return tls.create_ssl_context(self.tls) if self.tls is not None else None

    def guard(self, counters: HttpCounters | None = None) -> auth.Guard | None:
        """What the middleware enforces (web/auth.py); None if the file asks for nothing."""
        return auth.build_guard(
            users=self.basic_auth_users,
            headers=self.headers,
            rate_limit=self.rate_limit,
            allowed_sans=self.tls.client_allowed_sans if self.tls else None,
            counters=counters,
        )


class ServedWebConfig:
    """The web config file in use: its guard and TLS context, which `reload()` replaces
    together with what the file says now (SIGHUP), or not at all."""

    def __init__(self, config: WebConfig, counters: HttpCounters) -> None:
        self._counters = counters
        self._config = config
        self._guard = config.guard(counters)
        self._ssl_context = config.create_ssl_context()

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for a new connection (None: plain HTTP)."""
        return self._ssl_context

    def middleware(self) -> Middleware:
        """The middleware on every path: what the file says at each request (web/auth.py)."""

        @web.middleware
        async def web_config_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            guard = self._guard
            if guard is None:
                return await handler(request)
            return await guard.handle(request, handler)

        return web_config_guard

    def reload(self) -> None:
        """Read the file again; on success serve what it says from the next request or
        connection on, else keep serving the old one. Logs which, and why."""
        path = self._config.path
        try:
            config = _load(path)
            if (config.tls is None) != (self._config.tls is None):
                raise ConfigError(f"web config {path!r}: switching TLS on or off needs a restart")
            guard, context = config.guard(self._counters), config.create_ssl_context()
        except (ConfigError, ssl.SSLError, OSError) as exc:  # as tls.py's reloader
            log.error(WEB_CONFIG_RELOAD_FAILED, path=path, error=str(exc))
            return
        self._config, self._guard, self._ssl_context = config, guard, context
        log.info(WEB_CONFIG_RELOADED, path=path, **config.summary)


def load_web_config(path: str | None) -> WebConfig | None:
    """Parse and validate the file at `path` (None: no file, no web config).

    Also loads the certificate, key and client CAs once, so every problem shows at startup.
    """
    return None if path is None else _load(path)


def _load(path: str) -> WebConfig:
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
    if value not in CLIENT_AUTH:
        raise ConfigError(
            f"{where}client_auth_type: unknown value {value!r} (use one of: "
            f"{', '.join(CLIENT_AUTH)})"
        )
    return value


def _read_pem(path: str, where: str) -> str:
    text = config_file.read_text(path, where=where)
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{where}: no PEM certificate in {path!r}")
    return text


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
