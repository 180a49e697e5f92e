"""What the exporter watches: targets (one Sidekiq Redis each) and queue SLA rules, from the
`--redis.*` flags or `--config.file`'s `targets:` and `queues:` entries, whose keys are rows
here. Reads files only through `config_file.py`; knows no flag.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar
from urllib.parse import urlsplit

from exporter import config_file
from exporter.config_file import ConfigError
from exporter.redis_url import REDACTED, redacted_url, url_password, validate_redis_url
from exporter.values import format_value, parse_duration, parse_listen_address, parse_regex

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"  # of --redis.url and a file target
DEFAULT_SENTINEL_PORT: Final = 26379

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, repr=False)
class TargetSettings:
    """One Sidekiq Redis to poll; `name` is the value of the `target` label."""

    name: str
    url: str
    username: str | None
    password: str | None
    key_prefix: str  # Sidekiq 6 redis-namespace name, without the ":" ("" for none)
    # TLS to Redis (rediss://): files are PEM paths; "" means the system default / none.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_server_name: str = ""
    tls_insecure_skip_verify: bool = False
    # Redis Sentinel: when `sentinels` is set, the master named `sentinel_master` is looked up
    # through them and `url` only supplies the database, credentials and scheme.
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str = ""
    sentinel_password: str | None = None
    # The files the passwords were read from ("" for none), to read them again on SIGHUP.
    password_file: str = ""
    sentinel_password_file: str = ""

    def __repr__(self) -> str:
        # Settings get logged and printed in tracebacks: never show credentials.
        return (
            f"TargetSettings(name={self.name!r}, url={redacted_url(self.url)!r}, "
            f"username={REDACTED if self.username else None!r}, "
            f"password={REDACTED if self.password else None!r}, "
            f"key_prefix={self.key_prefix!r}, sentinels={self.sentinels!r}, "
            f"sentinel_master={self.sentinel_master!r})"
        )

    @property
    def redacted_url(self) -> str:
        """The Redis URL with any credentials replaced by `***`."""
        return redacted_url(self.url)


@dataclass(frozen=True, slots=True)
class QueueRule:
    """A `queues:` entry of the config file: an exact `name` or a `match` regex (full match)."""

    name: str | None
    match: re.Pattern[str] | None
    sla: float | None  # seconds; None: this entry gives no SLA
    component: str  # "" when none

    def matches(self, queue: str) -> bool:
        """True if this entry applies to `queue`."""
        if self.name is not None:
            return queue == self.name
        return self.match is not None and self.match.fullmatch(queue) is not None


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """What `--config.file` holds: targets (replacing the flag target) and queue SLA rules."""

    targets: tuple[TargetSettings, ...] = ()
    queue_rules: tuple[QueueRule, ...] = ()


def validate_target_name(name: str) -> str:
    """Return `name` if it can be a `target` label value, else raise ConfigError."""
    if not name.strip() or not name.isprintable():
        raise ConfigError(f"invalid target name {name!r}: must be non-empty printable text")
    return name


def validate_key_prefix(prefix: str) -> str:
    """Return `prefix` if it is a redis-namespace name (no trailing ':'), else raise ConfigError."""
    if prefix.endswith(":"):
        raise ConfigError(
            f"invalid key prefix {prefix!r}: give the redis-namespace name without the "
            f"trailing ':' (e.g. 'sidekiq' reads 'sidekiq:queues')"
        )
    return prefix


def read_password_file(path: str) -> str:
    """The password in `path`, without its trailing newline; ConfigError if unreadable/empty."""
    password = config_file.read_text(path, "password file ").rstrip("\r\n")
    if not password:
        raise ConfigError(f"password file {path!r} is empty")
    return password


def build_target(
    *,
    name: str,
    url: str,
    key_prefix: str = "",
    username: str | None = None,
    password: str | None = None,
    **connection: Any,
) -> TargetSettings:
    """Validate one target's settings (shared by the flags and the YAML `targets:` list).

    `connection` takes the TLS and Sentinel fields of `TargetSettings` by name.
    """
    validate_target_name(name)
    validate_redis_url(url)
    validate_key_prefix(key_prefix)
    if password is not None and url_password(url) is not None:
        # redis-py lets the URL's password win over the keyword; refuse rather than guess.
        raise ConfigError(
            f"Redis URL {redacted_url(url)!r} already has a password; "
            "give it in the URL or in the password file, not both"
        )
    target = TargetSettings(
        name=name,
        url=url,
        username=username,
        password=password,
        key_prefix=key_prefix,
        **connection,
    )
    if target.sentinels and not target.sentinel_master:
        raise ConfigError(f"target {name!r}: sentinels need sentinel_master")
    if target.sentinels and urlsplit(url).scheme == "unix":
        raise ConfigError(f"target {name!r}: sentinels need a redis:// or rediss:// URL")
    tls_files = (target.tls_ca_file, target.tls_cert_file, target.tls_key_file)
    if (any(tls_files) or target.tls_server_name or target.tls_insecure_skip_verify) and (
        urlsplit(url).scheme != "rediss"
    ):
        raise ConfigError(f"target {name!r}: TLS settings need a rediss:// URL")
    if bool(target.tls_cert_file) != bool(target.tls_key_file):
        raise ConfigError(f"target {name!r}: cert_file and key_file go together")
    for path in tls_files:
        if path and not Path(path).is_file():
            raise ConfigError(f"target {name!r}: no such file {path!r}")
    return target


# --------------------------------------------------------------------------- config-file rows


@dataclass(frozen=True, slots=True)
class FileKey(Generic[_T]):
    """One key of a `targets:` or `queues:` entry: its meaning, reader and value when absent."""

    name: str
    help: str
    read: Callable[[object, str], _T]  # (YAML value, where it sits) -> value, or ConfigError
    default: _T
    shown: str | None = None  # the default as the reference shows it; None: from `default`
    field: str = ""  # the field of TargetSettings / QueueRule it fills, if not named `name`

    @property
    def default_is_value(self) -> bool:
        """True when the default is shown as the value itself (`10s`), not described."""
        return self.shown is None and self.default is not None

    @property
    def default_text(self) -> str:
        return self.shown if self.shown is not None else format_value(self.default)

    @property
    def fills(self) -> str:
        """The field of `TargetSettings` or `QueueRule` this key's value goes to."""
        return self.field or self.name

    def value(self, entry: Mapping[str, object], where: str) -> _T:
        """The key's value in `entry` (the default when absent); errors name `where.key`."""
        if self.name not in entry:
            return self.default
        return self.read(entry[self.name], f"{where}.{self.name}")


def _text(value: object, where: str) -> str:
    if value is None:  # `key:` left empty: not the default, and not text either
        raise ConfigError(f"{where}: expected text, got null")
    return config_file.text(value, where)


def _optional_text(value: object, where: str) -> str | None:
    return _text(value, where) or None


def _password(value: object, where: str) -> str | None:
    path = _text(value, where)
    try:
        return read_password_file(path) if path else None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _strict_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false")
    return value


def _sentinels(value: object, where: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ConfigError(f"{where}: expected a list of host:port")
    found = []
    for text in value:
        try:
            host, port = (
                parse_listen_address(text) if ":" in text else (text, DEFAULT_SENTINEL_PORT)
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if not host:
            raise ConfigError(f"{where}: {text!r} needs a host")
        found.append((host, port))
    return tuple(found)


def _pattern(value: object, where: str) -> re.Pattern[str]:
    text = _text(value, where)
    try:
        return parse_regex(text)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _sla(value: object, where: str) -> float:
    try:
        seconds = parse_duration(str(value))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if seconds <= 0:
        raise ConfigError(f"{where}: must be more than 0")
    return seconds


TARGET_KEYS: Final[tuple[FileKey[Any], ...]] = (
    FileKey("name", "the `target` label value; unique in the file", _text, "", "required"),
    FileKey(
        "url",
        "Redis URL: `redis://`, `rediss://` (TLS) or `unix://`; with `sentinels` only its "
        "scheme, credentials and database count",
        _text,
        DEFAULT_REDIS_URL,
    ),
    FileKey("key_prefix", "Sidekiq 6 redis-namespace name, without the `:`", _text, ""),
    FileKey("username", "ACL user name (or give it in the URL)", _optional_text, None),
    FileKey(
        "password_file",
        "file holding the password (trailing newline stripped); not with a password in the URL",
        _password,
        None,
        field="password",
    ),
    FileKey(
        "ca_file",
        "PEM file of the CAs that may sign the server certificate: then the only trust anchor",
        _text,
        "",
        "the system store",
        field="tls_ca_file",
    ),
    FileKey(
        "cert_file",
        "client certificate (PEM), with `key_file`",
        _text,
        "",
        "none",
        field="tls_cert_file",
    ),
    FileKey(
        "key_file",
        "key of the client certificate (PEM, not encrypted)",
        _text,
        "",
        "none",
        field="tls_key_file",
    ),
    FileKey(
        "server_name",
        "name sent as SNI and checked against the server certificate",
        _text,
        "",
        "the URL's host",
        field="tls_server_name",
    ),
    FileKey(
        "insecure_skip_verify",
        "`true` checks neither the certificate chain nor the name (for tests only)",
        _strict_bool,
        False,
        field="tls_insecure_skip_verify",
    ),
    FileKey(
        "sentinels",
        f"Sentinels as `host:port` (port {DEFAULT_SENTINEL_PORT} if left out): the master is "
        "looked up through them",
        _sentinels,
        (),
        "none",
    ),
    FileKey("sentinel_master", "the master's name at the Sentinels", _text, "", "none"),
    FileKey(
        "sentinel_password_file",
        "file holding the Sentinels' password (their `requirepass`)",
        _password,
        None,
        field="sentinel_password",
    ),
)
QUEUE_KEYS: Final[tuple[FileKey[Any], ...]] = (
    FileKey("name", "the exact queue name (case-sensitive); give `name` or `match`", _text, None),
    FileKey(
        "match",
        "a Python regular expression matching the whole name; give `name` or `match`",
        _pattern,
        None,
    ),
    FileKey(
        "sla",
        "the latency the queue promises, a duration: `500ms`, `30s`, `5m`, `1m30s`, `2h`",
        _sla,
        None,
        "from the queue's name",
    ),
    FileKey("component", "the `component` label value", _text, "", "from the queue's name"),
)


def load_config_file(path: str) -> ConfigFile:
    """Parse and validate the YAML config file; errors name the entry and key at fault."""
    text = config_file.read_text(path, "config file ")
    try:
        document = config_file.load_yaml(text)
    except config_file.YamlSyntaxError as exc:
        where = f" at line {exc.line}" if exc.line is not None else ""
        raise ConfigError(f"config file {path!r} is not valid YAML{where}") from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(f"config file {path!r}: expected a mapping with targets: and queues:")
    unknown = set(document) - {"targets", "queues"}
    if unknown:
        raise ConfigError(f"config file {path!r}: unknown key {sorted(map(str, unknown))[0]!r}")
    try:
        targets = tuple(
            _config_target(entry, f"targets[{i}]")
            for i, entry in enumerate(config_file.mappings(document.get("targets"), "targets"))
        )
        rules = tuple(
            _config_queue(entry, f"queues[{i}]")
            for i, entry in enumerate(config_file.mappings(document.get("queues"), "queues"))
        )
    except ConfigError as exc:
        raise ConfigError(f"config file {path!r}: {exc}") from None
    names = [t.name for t in targets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"config file {path!r}: target name {duplicates[0]!r} is used twice")
    return ConfigFile(targets, rules)


def _known_keys(entry: Mapping[str, object], keys: Sequence[FileKey[Any]], where: str) -> None:
    unknown = set(entry) - {key.name for key in keys}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")


def _config_target(entry: Mapping[str, object], where: str) -> TargetSettings:
    _known_keys(entry, TARGET_KEYS, where)
    name_key, *keys = TARGET_KEYS
    name = name_key.value(entry, where)
    if not name:
        raise ConfigError(f"{where}.name: required")
    where = f"{where} ({name})"
    fields = {key.fills: key.value(entry, where) for key in keys}
    # Where the passwords came from, to read them again on SIGHUP (exporter/connection.py).
    for file_key, password in (
        ("password_file", "password"),
        ("sentinel_password_file", "sentinel_password"),
    ):
        if fields[password] is not None:
            fields[file_key] = _text(entry[file_key], f"{where}.{file_key}")
    try:
        return build_target(name=name, **fields)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _config_queue(entry: Mapping[str, object], where: str) -> QueueRule:
    _known_keys(entry, QUEUE_KEYS, where)
    if ("name" in entry) == ("match" in entry):
        raise ConfigError(f"{where}: give exactly one of name or match")
    return QueueRule(**{key.fills: key.value(entry, where) for key in QUEUE_KEYS})
