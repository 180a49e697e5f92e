"""Settings: Prometheus-style flags, their `SIDEKIQ_EXPORTER_*` environment defaults, the
`--config.file` YAML, and their validation.

Parsing happens once at start; every problem becomes a `ConfigError` with a one-line reason that
names the flag, environment variable or config-file entry it came from, and never shows a
credential (Redis URLs are shown through `redacted_url`).

The flow is `argv + env -> raw options (text + where it came from) -> validated Settings`:
`_resolve` takes each option from its flag if given, else from its environment variable if set
and non-empty; `_settings_from` validates them with one helper per concern (`build_target`,
`parse_duration`, `parse_listen_address`, ...) and applies the built-in defaults. The config
file goes through the same validators but is not merged option by option: each `targets:`
entry is built by `build_target`, and a file that lists targets replaces the single target the
`--redis.*` and `--target.name` flags describe (giving both is an error); `queues:` gives the
per-queue SLA rules.

I/O, all at start: reading the password files (`--redis.password-file`, and `password_file` and
`sentinel_password_file` in the config file) and the config file, checking that the TLS files
it names exist and that `--web.config.file` can be opened (exporter/webconfig.py parses it).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar
from urllib.parse import urlsplit

from exporter import __version__, config_file
from exporter.config_file import ConfigError
from exporter.redis_url import REDACTED, redacted_url, url_password, validate_redis_url

PROG: Final = "sidekiq-exporter"
ENV_PREFIX: Final = "SIDEKIQ_EXPORTER_"

DEFAULT_REDIS_URL: Final = "redis://localhost:6379/0"
DEFAULT_TARGET_NAME: Final = "default"
# Outside the crowded 9100-9999 exporter range, and not taken in the Prometheus wiki's
# default port allocations list at the time of writing.
DEFAULT_LISTEN_PORT: Final = 8743
DEFAULT_LISTEN_ADDRESS: Final = f":{DEFAULT_LISTEN_PORT}"
DEFAULT_TELEMETRY_PATH: Final = "/metrics"
DEFAULT_POLL_INTERVAL: Final = 10.0
MIN_POLL_INTERVAL: Final = 1.0
MAX_POLL_INTERVAL: Final = 300.0
DEFAULT_TIMEOUT_RATIO: Final = 0.8
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
DEFAULT_QUEUES_MAX: Final = 2000
DEFAULT_JOB_CLASSES_MAX: Final = 500

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("json", "console")
# Paths the web app serves itself; the telemetry path must not shadow them.
RESERVED_PATHS: Final = ("/", "/-/healthy", "/-/ready")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


class InfoRequested(Exception):  # not an error: a request to print something and exit 0
    """`--help` or `--version` was given: print `text` to stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


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
class Settings:
    """Everything the exporter needs to run, validated."""

    targets: tuple[TargetSettings, ...]
    poll_interval: float
    poll_timeout: float
    listen_host: str  # "" means every interface
    listen_port: int
    telemetry_path: str
    log_level: str
    log_format: str
    collect_processes: bool
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    config_file: str | None = None
    web_config_file: str | None = None  # exporter-toolkit web config: TLS and basic auth
    queue_rules: tuple[QueueRule, ...] = ()  # the config file's `queues:`, first match wins
    # Cardinality limits: series beyond them are dropped and counted, never merged.
    queues_max: int = DEFAULT_QUEUES_MAX
    queues_allow: re.Pattern[str] | None = None
    queues_deny: re.Pattern[str] | None = None
    job_classes_max: int = DEFAULT_JOB_CLASSES_MAX
    job_classes_allow: re.Pattern[str] | None = None
    job_classes_deny: re.Pattern[str] | None = None

    @property
    def listen_address(self) -> str:
        """The listen address in flag form (`:8743`, `127.0.0.1:8743`, `[::1]:8743`)."""
        return format_listen_address(self.listen_host, self.listen_port)


# --------------------------------------------------------------------------- value parsers

_DURATION_RE: Final = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"  # "m" but not the "m" of "ms"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?"
)
_UNIT_SECONDS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus/Go-style duration: `500ms`, `10s`, `1m`, `1m30s`, `2h`."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or not any(match.groupdict().values()):
        raise ConfigError(
            f"invalid duration {text!r} (use a number with a unit: 500ms, 10s, 1m30s, 2h)"
        )
    return sum(float(v) * _UNIT_SECONDS[unit] for unit, v in match.groupdict().items() if v)


def format_duration(seconds: float) -> str:
    """The shortest duration string for `seconds`: 10 -> `10s`, 0.5 -> `500ms`, 90 -> `1m30s`."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else ""]
    if millis:
        parts.append(f"{millis / 1000:g}s")
    return "".join(parts)


def parse_bool(text: str) -> bool:
    """A boolean from an environment variable: true/false, 1/0, yes/no, on/off."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"invalid boolean {text!r} (use true or false)")


def parse_listen_address(text: str) -> tuple[str, int]:
    """(host, port) from `:PORT`, `HOST:PORT` or `[IPv6]:PORT`; host "" means all interfaces."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or not rest.startswith(":"):
            raise ConfigError(f"invalid listen address {text!r} (use [::1]:PORT for IPv6)")
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ConfigError(f"invalid listen address {text!r}: missing :PORT")
        if ":" in host:
            raise ConfigError(f"invalid listen address {text!r}: put IPv6 hosts in [brackets]")
    if any(c.isspace() or c in "/@[]" for c in host):
        raise ConfigError(f"invalid listen address {text!r}: bad host {host!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"invalid listen address {text!r}: port must be 0-65535")
    return host, int(port_text)


def format_listen_address(host: str, port: int) -> str:
    """The inverse of `parse_listen_address`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --------------------------------------------------------------------------- validators


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


def read_password_file(path: str) -> str:
    """The password in `path`, without its trailing newline; ConfigError if unreadable/empty."""
    password = config_file.read_text(path, "password file ").rstrip("\r\n")
    if not password:
        raise ConfigError(f"password file {path!r} is empty")
    return password


def validate_telemetry_path(path: str) -> str:
    """Return `path` if it is a usable route for /metrics, else raise ConfigError."""
    if not path.startswith("/"):
        raise ConfigError(f"invalid telemetry path {path!r}: must start with '/'")
    if path in RESERVED_PATHS:
        raise ConfigError(f"invalid telemetry path {path!r}: already used by the exporter")
    if any(c.isspace() or c in "?#" for c in path):
        raise ConfigError(f"invalid telemetry path {path!r}: no spaces, '?' or '#'")
    return path


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True, slots=True)
class _Flag:
    name: str  # without the leading "--"
    help: str
    default_text: str  # shown in --help only; real defaults are applied in _settings_from
    metavar: str = ""
    boolean: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace(".", "_").replace("-", "_")

    @property
    def env(self) -> str:
        return env_var(self.name)


def env_var(flag: str) -> str:
    """The variable that defaults `--flag`: `redis.url` -> `SIDEKIQ_EXPORTER_REDIS_URL`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace(".", "_").replace("-", "_")


_FLAGS: Final = (
    _Flag(
        "redis.url",
        "Redis URL of the Sidekiq to watch: redis://, rediss:// or unix://. "
        "Credentials in it are never logged.",
        DEFAULT_REDIS_URL,
        "URL",
    ),
    _Flag(
        "redis.password-file",
        "file holding the Redis password (trailing newline stripped)",
        "none",
        "PATH",
    ),
    _Flag(
        "redis.key-prefix",
        "Sidekiq 6 redis-namespace name; 'sidekiq' reads 'sidekiq:queues'",
        '""',
        "NAME",
    ),
    _Flag("target.name", "value of the 'target' label", DEFAULT_TARGET_NAME, "NAME"),
    _Flag(
        "poll.interval",
        "how often to sample Redis (1s to 5m), e.g. 500ms, 10s, 1m",
        "10s",
        "DURATION",
    ),
    _Flag("poll.timeout", "give up on a poll after this long", "80%% of the interval", "DURATION"),
    _Flag(
        "web.listen-address",
        "address to serve HTTP on: :PORT, HOST:PORT or [IPv6]:PORT",
        DEFAULT_LISTEN_ADDRESS,
        "ADDRESS",
    ),
    _Flag("web.telemetry-path", "path to serve metrics on", DEFAULT_TELEMETRY_PATH, "PATH"),
    _Flag("log.level", "one of: " + ", ".join(LOG_LEVELS), "info", "LEVEL"),
    _Flag(
        "log.format",
        "one of: " + ", ".join(LOG_FORMATS),
        "json, or console when stdout is a terminal",
        "FORMAT",
    ),
    _Flag("collect.processes", "export per-process series", "true", boolean=True),
    _Flag(
        "collect.queues.max",
        "most queues to export per target; the rest are dropped and counted",
        str(DEFAULT_QUEUES_MAX),
        "N",
    ),
    _Flag("collect.queues.allow", "export only queues fully matching this regex", "all", "REGEX"),
    _Flag("collect.queues.deny", "never export queues fully matching this regex", "none", "REGEX"),
    _Flag(
        "collect.job-classes.max",
        "most job classes to export per target; the rest are dropped and counted",
        str(DEFAULT_JOB_CLASSES_MAX),
        "N",
    ),
    _Flag(
        "collect.job-classes.allow",
        "export only job classes fully matching this regex",
        "all",
        "REGEX",
    ),
    _Flag(
        "collect.job-classes.deny",
        "never export job classes fully matching this regex",
        "none",
        "REGEX",
    ),
    _Flag(
        "config.file",
        "YAML file with `targets:` (several Redis, TLS, Sentinel) and `queues:` (SLAs)",
        "none",
        "PATH",
    ),
    _Flag(
        "web.config.file",
        "exporter-toolkit web config file: TLS and basic auth for the HTTP server",
        "none",
        "PATH",
    ),
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing and exiting."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise ConfigError(message.strip() if message else f"argument parsing stopped ({status})")


class _RaiseInfo(argparse.Action):
    """--help / --version: hand the text back to the caller instead of printing it here."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.text_kind = kwargs.pop("text_kind")
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if self.text_kind == "version":
            raise InfoRequested(version_text())
        raise InfoRequested(parser.format_help())


def version_text() -> str:
    """What `--version` prints."""
    return f"{PROG} {__version__}\n"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; every flag defaults to None so env and built-in defaults apply later."""
    parser = _Parser(
        prog=PROG,
        description="Prometheus exporter for Sidekiq: samples Sidekiq's Redis on its own "
        "clock and serves the latest snapshot.",
        add_help=False,
        allow_abbrev=False,  # "--redis.u" must not silently mean --redis.url
    )
    parser.add_argument("-h", "--help", action=_RaiseInfo, text_kind="help", help="show help")
    parser.add_argument(
        "--version", action=_RaiseInfo, text_kind="version", help="show the version"
    )
    for flag in _FLAGS:
        help_text = f"{flag.help} [env: {flag.env}] (default: {flag.default_text})"
        if flag.boolean:
            parser.add_argument(
                f"--{flag.name}",
                dest=flag.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                f"--{flag.name}", dest=flag.dest, default=None, metavar=flag.metavar, help=help_text
            )
    return parser


@dataclass(frozen=True, slots=True)
class _Raw:
    """One option's text and where it came from, for error messages."""

    value: str
    source: str  # "--poll.interval" or "SIDEKIQ_EXPORTER_POLL_INTERVAL"


def _resolve(namespace: argparse.Namespace, env: Mapping[str, str]) -> dict[str, _Raw]:
    """Flag if given, else the environment variable if set and non-empty; unset otherwise."""
    resolved: dict[str, _Raw] = {}
    for flag in _FLAGS:
        given = getattr(namespace, flag.dest)
        if given is not None:
            text = ("true" if given else "false") if flag.boolean else str(given)
            resolved[flag.name] = _Raw(text, f"--{flag.name}")
        elif env.get(flag.env):
            resolved[flag.name] = _Raw(env[flag.env], flag.env)
    return resolved


_T = TypeVar("_T")


def _checked(raw: _Raw | None, default: _T, convert: Callable[[str], _T]) -> _T:
    """`convert(raw.value)` with errors prefixed by the option's source; `default` if unset."""
    if raw is None:
        return default
    try:
        return convert(raw.value)
    except ConfigError as exc:
        raise ConfigError(f"{raw.source}: {exc}") from None


def load_settings(argv: Sequence[str], env: Mapping[str, str], *, stdout_is_tty: bool) -> Settings:
    """Parse flags (which win) and `SIDEKIQ_EXPORTER_*` variables into validated Settings."""
    namespace = build_parser().parse_args(list(argv))
    return _settings_from(_resolve(namespace, env), stdout_is_tty=stdout_is_tty)


def _settings_from(raw: Mapping[str, _Raw], *, stdout_is_tty: bool) -> Settings:
    """Validate resolved options; each error names the flag or variable it came from."""
    interval = _checked(raw.get("poll.interval"), DEFAULT_POLL_INTERVAL, _poll_interval)
    timeout = _checked(
        raw.get("poll.timeout"),
        interval * DEFAULT_TIMEOUT_RATIO,
        lambda text: _poll_timeout(text, interval),
    )
    host, port = _checked(
        raw.get("web.listen-address"), ("", DEFAULT_LISTEN_PORT), parse_listen_address
    )
    path = _checked(raw.get("web.telemetry-path"), DEFAULT_TELEMETRY_PATH, validate_telemetry_path)
    level = _checked(raw.get("log.level"), "info", lambda text: _choice(text, LOG_LEVELS))
    fmt = _checked(
        raw.get("log.format"),
        "console" if stdout_is_tty else "json",
        lambda text: _choice(text, LOG_FORMATS),
    )
    processes = _checked(raw.get("collect.processes"), True, parse_bool)
    queues_max = _checked(raw.get("collect.queues.max"), DEFAULT_QUEUES_MAX, parse_limit)
    queues_allow = _checked(raw.get("collect.queues.allow"), None, parse_regex)
    queues_deny = _checked(raw.get("collect.queues.deny"), None, parse_regex)
    classes_max = _checked(raw.get("collect.job-classes.max"), DEFAULT_JOB_CLASSES_MAX, parse_limit)
    classes_allow = _checked(raw.get("collect.job-classes.allow"), None, parse_regex)
    classes_deny = _checked(raw.get("collect.job-classes.deny"), None, parse_regex)
    web_config = _checked(raw.get("web.config.file"), None, config_file.check_readable)
    config_raw = raw.get("config.file")
    config = _checked(config_raw, ConfigFile(), load_config_file)

    name = _checked(raw.get("target.name"), DEFAULT_TARGET_NAME, validate_target_name)
    url = _checked(raw.get("redis.url"), DEFAULT_REDIS_URL, _valid_url)
    prefix = _checked(raw.get("redis.key-prefix"), "", validate_key_prefix)
    password_raw = raw.get("redis.password-file")
    password = _checked(password_raw, None, read_password_file)
    # Each part is valid on its own by now; what is left is the URL/password-file conflict,
    # which is reported against the password file.
    target = _checked(
        password_raw,
        build_target(name=name, url=url, key_prefix=prefix),
        lambda _path: build_target(name=name, url=url, key_prefix=prefix, password=password),
    )
    targets: tuple[TargetSettings, ...] = (target,)
    if config.targets:
        # The flags describe the one-target shortcut; a config file with targets replaces it.
        given = [raw[f].source for f in _TARGET_FLAGS if f in raw]
        if given:
            assert config_raw is not None
            raise ConfigError(
                f"{config_raw.source}: the file lists targets, so {', '.join(given)} "
                "must not be given too"
            )
        targets = config.targets
    return Settings(
        targets=targets,
        poll_interval=interval,
        poll_timeout=timeout,
        listen_host=host,
        listen_port=port,
        telemetry_path=path,
        log_level=level,
        log_format=fmt,
        collect_processes=processes,
        config_file=config_raw.value if config_raw else None,
        web_config_file=web_config,
        queue_rules=config.queue_rules,
        queues_max=queues_max,
        queues_allow=queues_allow,
        queues_deny=queues_deny,
        job_classes_max=classes_max,
        job_classes_allow=classes_allow,
        job_classes_deny=classes_deny,
    )


_TARGET_FLAGS: Final = ("redis.url", "redis.password-file", "redis.key-prefix", "target.name")


def parse_limit(text: str) -> int:
    """A positive whole number, for the cardinality limits."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"invalid limit {text!r} (use a whole number of at least 1)")
    return int(text)


def parse_regex(text: str) -> re.Pattern[str]:
    """A regular expression (Python syntax), matched against whole names."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"invalid regex {text!r}: {exc}") from None


# --------------------------------------------------------------------------- config file


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """What `--config.file` holds: targets (replacing the flag target) and queue SLA rules."""

    targets: tuple[TargetSettings, ...] = ()
    queue_rules: tuple[QueueRule, ...] = ()


_TARGET_KEYS: Final = frozenset(
    {
        "name",
        "url",
        "key_prefix",
        "username",
        "password_file",
        "ca_file",
        "cert_file",
        "key_file",
        "server_name",
        "insecure_skip_verify",
        "sentinels",
        "sentinel_master",
        "sentinel_password_file",
    }
)
_QUEUE_KEYS: Final = frozenset({"name", "match", "sla", "component"})


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


def _config_text(entry: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = entry.get(key, default)
    if value is None:  # `key:` left empty: not the default, and not text either
        raise ConfigError(f"{where}.{key}: expected text, got null")
    return config_file.text(value, f"{where}.{key}")


def _config_target(entry: Mapping[str, Any], where: str) -> TargetSettings:
    unknown = set(entry) - _TARGET_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")
    name = _config_text(entry, "name", where)
    if not name:
        raise ConfigError(f"{where}.name: required")
    where = f"{where} ({name})"

    def password(key: str) -> str | None:
        file = _config_text(entry, key, where)
        return read_password_file(file) if file else None

    sentinels = entry.get("sentinels", [])
    if not isinstance(sentinels, list) or not all(isinstance(s, str) for s in sentinels):
        raise ConfigError(f"{where}.sentinels: expected a list of host:port")
    skip_verify = entry.get("insecure_skip_verify", False)
    if not isinstance(skip_verify, bool):
        raise ConfigError(f"{where}.insecure_skip_verify: expected true or false")
    try:
        return build_target(
            name=name,
            url=_config_text(entry, "url", where, DEFAULT_REDIS_URL),
            key_prefix=_config_text(entry, "key_prefix", where),
            username=_config_text(entry, "username", where) or None,
            password=password("password_file"),
            tls_ca_file=_config_text(entry, "ca_file", where),
            tls_cert_file=_config_text(entry, "cert_file", where),
            tls_key_file=_config_text(entry, "key_file", where),
            tls_server_name=_config_text(entry, "server_name", where),
            tls_insecure_skip_verify=skip_verify,
            sentinels=tuple(_host_port(s, where) for s in sentinels),
            sentinel_master=_config_text(entry, "sentinel_master", where),
            sentinel_password=password("sentinel_password_file"),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _host_port(text: str, where: str) -> tuple[str, int]:
    host, port = parse_listen_address(text) if ":" in text else (text, 26379)
    if not host:
        raise ConfigError(f"{where}.sentinels: {text!r} needs a host")
    return host, port


def _config_queue(entry: Mapping[str, Any], where: str) -> QueueRule:
    unknown = set(entry) - _QUEUE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(map(str, unknown))[0]!r}")
    if ("name" in entry) == ("match" in entry):
        raise ConfigError(f"{where}: give exactly one of name or match")
    name = _config_text(entry, "name", where) if "name" in entry else None
    pattern = None
    if "match" in entry:
        try:
            pattern = parse_regex(_config_text(entry, "match", where))
        except ConfigError as exc:
            raise ConfigError(f"{where}.match: {exc}") from None
    sla: float | None = None
    if "sla" in entry:
        raw_sla = entry["sla"]
        try:
            sla = parse_duration(str(raw_sla))
        except ConfigError as exc:
            raise ConfigError(f"{where}.sla: {exc}") from None
        if sla <= 0:
            raise ConfigError(f"{where}.sla: must be more than 0")
    component = _config_text(entry, "component", where)
    return QueueRule(name=name, match=pattern, sla=sla, component=component)


def _valid_url(url: str) -> str:
    validate_redis_url(url)
    return url


def _poll_interval(text: str) -> float:
    seconds = parse_duration(text)
    if not MIN_POLL_INTERVAL <= seconds <= MAX_POLL_INTERVAL:
        raise ConfigError(
            f"{text!r} is out of range: the poll interval must be between "
            f"{format_duration(MIN_POLL_INTERVAL)} and {format_duration(MAX_POLL_INTERVAL)}"
        )
    return seconds


def _poll_timeout(text: str, interval: float) -> float:
    seconds = parse_duration(text)
    if not 0 < seconds <= interval:
        raise ConfigError(
            f"{text!r} is out of range: the poll timeout must be > 0 and at most the "
            f"poll interval ({format_duration(interval)})"
        )
    return seconds


def _choice(text: str, choices: tuple[str, ...]) -> str:
    lowered = text.strip().lower()
    if lowered not in choices:
        raise ConfigError(f"invalid value {text!r} (choose from {', '.join(choices)})")
    return lowered
