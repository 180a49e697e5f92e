"""Settings: one row per flag (name, parser, typed default, help; the environment variable
follows from the name) and the frozen `Settings` they build; `--help` is rendered from the
rows. Every problem is a one-line `ConfigError`; files are read by `targets.py`.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Generic, NoReturn, TypeVar

from exporter import __version__, config_file
from exporter.config_file import ConfigError
from exporter.redis_url import validate_redis_url
from exporter.targets import (
    DEFAULT_REDIS_URL,
    ConfigFile,
    QueueRule,
    TargetSettings,
    build_target,
    load_config_file,
    read_password_file,
    validate_key_prefix,
    validate_target_name,
)
from exporter.values import (
    format_bytes,
    format_duration,
    format_listen_address,
    format_value,
    parse_bool,
    parse_bytes,
    parse_choice,
    parse_duration,
    parse_limit,
    parse_listen_address,
    parse_regex,
)

PROG: Final = "sidekiq-exporter"
ENV_PREFIX: Final = "SIDEKIQ_EXPORTER_"

MIN_POLL_INTERVAL: Final = 1.0
MAX_POLL_INTERVAL: Final = 300.0
DEFAULT_TIMEOUT_RATIO: Final = 0.8  # the poll timeout, unless given: this share of the interval
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("json", "console")
# Paths the web app serves itself; the telemetry path must not shadow them.
RESERVED_PATHS: Final = ("/", "/-/healthy", "/-/ready")
MAX_WEB_TIMEOUT: Final = 3600.0

_T = TypeVar("_T")


class InfoRequested(Exception):  # not an error: a request to print something and exit 0
    """`--help` or `--version` was given: print `text` to stdout and exit 0."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# --------------------------------------------------------------------------- validators


def validate_telemetry_path(path: str) -> str:
    """Return `path` if it is a usable route for /metrics, else raise ConfigError."""
    if not path.startswith("/"):
        raise ConfigError(f"invalid telemetry path {path!r}: must start with '/'")
    if path in RESERVED_PATHS:
        raise ConfigError(f"invalid telemetry path {path!r}: already used by the exporter")
    if any(c.isspace() or c in "?#" for c in path):
        raise ConfigError(f"invalid telemetry path {path!r}: no spaces, '?' or '#'")
    return path


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


def _timeout(text: str) -> float:
    seconds = parse_duration(text)
    if not 0 < seconds <= MAX_WEB_TIMEOUT:
        raise ConfigError(
            f"{text!r} is out of range: must be more than 0 and at most "
            f"{format_duration(MAX_WEB_TIMEOUT)}"
        )
    return seconds


# --------------------------------------------------------------------------- flag rows


def env_var(flag: str) -> str:
    """The variable that defaults `--flag`: `redis.url` -> `SIDEKIQ_EXPORTER_REDIS_URL`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace(".", "_").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Flag(Generic[_T]):
    """One flag: `--name`, its meaning, how its text is parsed, and its value when not given.

    The environment variable is `env_var(name)`. A flag given wins over its variable; an
    empty variable counts as unset.
    """

    name: str  # without the leading "--"
    help: str
    parse: Callable[[str], _T]  # ConfigError with a one-line reason on bad text
    default: _T
    metavar: str = ""  # "" for a boolean flag: `--name` / `--no-name`
    shown: str | None = None  # the default as --help shows it; None: from `default`
    show: Callable[[_T], str] = format_value

    @property
    def boolean(self) -> bool:
        return not self.metavar

    @property
    def env(self) -> str:
        return env_var(self.name)

    @property
    def dest(self) -> str:
        return self.name.replace(".", "_").replace("-", "_")

    @property
    def default_is_value(self) -> bool:
        """True when the default is shown as the value itself (`10s`), not described."""
        return self.shown is None and self.default is not None

    @property
    def default_text(self) -> str:
        return self.shown if self.shown is not None else self.show(self.default)


def _choice_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    return lambda text: parse_choice(text, choices)


REDIS_URL: Final = Flag(
    "redis.url",
    "Redis URL of the Sidekiq to watch: redis://, rediss:// or unix://. "
    "Credentials in it are never logged.",
    _valid_url,
    DEFAULT_REDIS_URL,
    "URL",
)
REDIS_PASSWORD_FILE: Final[Flag[str | None]] = Flag(
    "redis.password-file",
    "file holding the Redis password (trailing newline stripped)",
    read_password_file,
    None,
    "PATH",
)
REDIS_KEY_PREFIX: Final = Flag(
    "redis.key-prefix",
    "Sidekiq 6 redis-namespace name; 'sidekiq' reads 'sidekiq:queues'",
    validate_key_prefix,
    "",
    "NAME",
)
TARGET_NAME: Final = Flag(
    "target.name", "value of the 'target' label", validate_target_name, "default", "NAME"
)
POLL_INTERVAL: Final = Flag(
    "poll.interval",
    "how often to sample Redis (1s to 5m), e.g. 500ms, 10s, 1m",
    _poll_interval,
    10.0,
    "DURATION",
    show=format_duration,
)
POLL_TIMEOUT: Final[Flag[float | None]] = Flag(
    "poll.timeout",
    "give up on a poll after this long",
    parse_duration,
    None,  # a share of the interval: see _settings_from
    "DURATION",
    shown=f"{DEFAULT_TIMEOUT_RATIO:.0%} of the interval",
)
POLL_MAX_BYTES: Final = Flag(
    "poll.max-bytes",
    "most bytes of Redis replies one poll may read (KiB, MiB, GiB); a poll that would read "
    "more fails and its connection is closed, so a huge or endless reply cannot take memory",
    parse_bytes,
    64 * 1024**2,
    "SIZE",
    show=format_bytes,
)
LISTEN_ADDRESS: Final = Flag(
    "web.listen-address",
    "address to serve HTTP on: :PORT, HOST:PORT or [IPv6]:PORT",
    parse_listen_address,
    # Outside the crowded 9100-9999 exporter range, and not taken in the Prometheus wiki's
    # default port allocations list at the time of writing.
    ("", 8743),
    "ADDRESS",
    show=lambda address: format_listen_address(*address),
)
TELEMETRY_PATH: Final = Flag(
    "web.telemetry-path", "path to serve metrics on", validate_telemetry_path, "/metrics", "PATH"
)
MAX_CONNECTIONS: Final = Flag(
    "web.max-connections",
    "most HTTP connections at once, TLS handshakes included; at the limit the oldest idle one "
    "is closed to make room (checked against ulimit -n at start)",
    parse_limit,
    512,
    "N",
)
READ_HEADER_TIMEOUT: Final = Flag(
    "web.read-header-timeout",
    "time a client has for the TLS handshake, and for each request's line and headers",
    _timeout,
    10.0,
    "DURATION",
    show=format_duration,
)
IDLE_TIMEOUT: Final = Flag(
    "web.idle-timeout",
    "how long a connection may wait for its next request (keep-alive)",
    _timeout,
    120.0,
    "DURATION",
    show=format_duration,
)
LOG_LEVEL: Final = Flag(
    "log.level", "one of: " + ", ".join(LOG_LEVELS), _choice_of(LOG_LEVELS), "info", "LEVEL"
)
LOG_FORMAT: Final[Flag[str | None]] = Flag(
    "log.format",
    "one of: " + ", ".join(LOG_FORMATS),
    _choice_of(LOG_FORMATS),
    None,  # depends on the terminal: see _settings_from
    "FORMAT",
    shown="json, or console when stdout is a terminal",
)
COLLECT_PROCESSES: Final = Flag("collect.processes", "export per-process series", parse_bool, True)
PROCESSES_MAX: Final = Flag(
    "collect.processes.max",
    "most processes with per-process series per target; the rest are counted, and the totals "
    "and per-queue capacity still include them",
    parse_limit,
    1000,
    "N",
)
QUEUES_MAX: Final = Flag(
    "collect.queues.max",
    "most queues to export per target; the rest are dropped and counted",
    parse_limit,
    2000,
    "N",
)
QUEUES_ALLOW: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.queues.allow",
    "export only queues fully matching this regex",
    parse_regex,
    None,
    "REGEX",
    shown="all",
)
QUEUES_DENY: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.queues.deny",
    "never export queues fully matching this regex",
    parse_regex,
    None,
    "REGEX",
)
JOB_CLASSES_MAX: Final = Flag(
    "collect.job-classes.max",
    "most job classes to export per target; the rest are dropped and counted",
    parse_limit,
    500,
    "N",
)
JOB_CLASSES_ALLOW: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.job-classes.allow",
    "export only job classes fully matching this regex",
    parse_regex,
    None,
    "REGEX",
    shown="all",
)
JOB_CLASSES_DENY: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.job-classes.deny",
    "never export job classes fully matching this regex",
    parse_regex,
    None,
    "REGEX",
)
LABEL_VALUE_LENGTH_MAX: Final = Flag(
    "collect.label-value-length.max",
    "longest label value taken from Redis (queue, class, process identity, hostname, tag, "
    "version, cron job, cron namespace, leader), in UTF-8 bytes; what has a longer one is not "
    "exported, and is counted",
    parse_limit,
    1024,
    "BYTES",
)
COLLECT_CRON: Final = Flag(
    "collect.cron",
    "read sidekiq-cron's jobs (finding its namespaces with one SCAN a minute at most)",
    parse_bool,
    True,
)
CRON_MAX: Final = Flag(
    "collect.cron.max",
    "most sidekiq-cron jobs to export per target; the rest are dropped and counted",
    parse_limit,
    500,
    "N",
)
CRON_ALLOW: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.cron.allow",
    "export only sidekiq-cron jobs whose name fully matches this regex",
    parse_regex,
    None,
    "REGEX",
    shown="all",
)
CRON_DENY: Final[Flag[re.Pattern[str] | None]] = Flag(
    "collect.cron.deny",
    "never export sidekiq-cron jobs whose name fully matches this regex",
    parse_regex,
    None,
    "REGEX",
)
CONFIG_FILE: Final = Flag(
    "config.file",
    "YAML file with `targets:` (several Redis, TLS, Sentinel) and `queues:` (SLAs)",
    load_config_file,
    ConfigFile(),
    "PATH",
    shown="none",
)
WEB_CONFIG_FILE: Final[Flag[str | None]] = Flag(
    "web.config.file",
    "exporter-toolkit web config file: TLS and basic auth for the HTTP server",
    config_file.check_readable,  # parsed by exporter/web/config.py
    None,
    "PATH",
)

# Every flag, in the order --help and the reference list them.
FLAGS: Final[tuple[Flag[Any], ...]] = (
    REDIS_URL,
    REDIS_PASSWORD_FILE,
    REDIS_KEY_PREFIX,
    TARGET_NAME,
    POLL_INTERVAL,
    POLL_TIMEOUT,
    POLL_MAX_BYTES,
    LISTEN_ADDRESS,
    TELEMETRY_PATH,
    MAX_CONNECTIONS,
    READ_HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    LOG_LEVEL,
    LOG_FORMAT,
    COLLECT_PROCESSES,
    PROCESSES_MAX,
    QUEUES_MAX,
    QUEUES_ALLOW,
    QUEUES_DENY,
    JOB_CLASSES_MAX,
    JOB_CLASSES_ALLOW,
    JOB_CLASSES_DENY,
    LABEL_VALUE_LENGTH_MAX,
    COLLECT_CRON,
    CRON_MAX,
    CRON_ALLOW,
    CRON_DENY,
    CONFIG_FILE,
    WEB_CONFIG_FILE,
)
# The flags that describe the one target a config file with `targets:` replaces.
TARGET_FLAGS: Final = (REDIS_URL, REDIS_PASSWORD_FILE, REDIS_KEY_PREFIX, TARGET_NAME)


# --------------------------------------------------------------------------- Settings


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
    # Limits on HTTP connections (exporter/web/server.py).
    max_connections: int = MAX_CONNECTIONS.default
    read_header_timeout: float = READ_HEADER_TIMEOUT.default
    idle_timeout: float = IDLE_TIMEOUT.default
    queue_rules: tuple[QueueRule, ...] = ()  # the config file's `queues:`, first match wins
    # Cardinality limits: series beyond them are dropped and counted, never merged.
    queues_max: int = QUEUES_MAX.default
    queues_allow: re.Pattern[str] | None = None
    queues_deny: re.Pattern[str] | None = None
    job_classes_max: int = JOB_CLASSES_MAX.default
    job_classes_allow: re.Pattern[str] | None = None
    job_classes_deny: re.Pattern[str] | None = None
    processes_max: int = PROCESSES_MAX.default
    label_value_length_max: int = LABEL_VALUE_LENGTH_MAX.default
    poll_max_bytes: int = POLL_MAX_BYTES.default
    collect_cron: bool = COLLECT_CRON.default
    cron_max: int = CRON_MAX.default
    cron_allow: re.Pattern[str] | None = None
    cron_deny: re.Pattern[str] | None = None

    @property
    def listen_address(self) -> str:
        """The listen address in flag form (`:8743`, `127.0.0.1:8743`, `[::1]:8743`)."""
        return format_listen_address(self.listen_host, self.listen_port)


# --------------------------------------------------------------------------- argv and env


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
    """The argument parser; every flag defaults to None so env and the rows' defaults apply."""
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
    for flag in FLAGS:
        # argparse formats help with %: a literal one is written %%.
        help_text = f"{flag.help} [env: {flag.env}] (default: {flag.default_text})"
        help_text = help_text.replace("%", "%%")
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


class _Options:
    """Each flag's text (flag if given, else its variable if set and non-empty), parsed by its
    row on demand; every error names the flag or variable it came from."""

    def __init__(self, namespace: argparse.Namespace, env: Mapping[str, str]) -> None:
        self._raw: dict[str, _Raw] = {}
        for flag in FLAGS:
            given = getattr(namespace, flag.dest)
            if given is not None:
                text = ("true" if given else "false") if flag.boolean else str(given)
                self._raw[flag.name] = _Raw(text, f"--{flag.name}")
            elif env.get(flag.env):
                self._raw[flag.name] = _Raw(env[flag.env], flag.env)

    def __getitem__(self, flag: Flag[_T]) -> _T:
        raw = self._raw.get(flag.name)
        if raw is None:
            return flag.default
        try:
            return flag.parse(raw.value)
        except ConfigError as exc:
            raise self.error(flag, str(exc)) from None

    def given(self, flag: Flag[Any]) -> bool:
        return flag.name in self._raw

    def text(self, flag: Flag[Any]) -> str | None:
        raw = self._raw.get(flag.name)
        return raw.value if raw is not None else None

    def source(self, flag: Flag[Any]) -> str:
        """Where a given flag's text came from: `--poll.interval` or its variable."""
        return self._raw[flag.name].source

    def error(self, flag: Flag[Any], reason: str) -> ConfigError:
        """A ConfigError about the value `flag` was given."""
        return ConfigError(f"{self.source(flag)}: {reason}")


def load_settings(argv: Sequence[str], env: Mapping[str, str], *, stdout_is_tty: bool) -> Settings:
    """Parse flags (which win) and `SIDEKIQ_EXPORTER_*` variables into validated Settings."""
    namespace = build_parser().parse_args(list(argv))
    return _settings_from(_Options(namespace, env), stdout_is_tty=stdout_is_tty)


def _settings_from(options: _Options, *, stdout_is_tty: bool) -> Settings:
    """Validate the options in this order (the first bad one is reported), then the rules that
    join several flags."""
    interval = options[POLL_INTERVAL]
    timeout = _poll_timeout(options, interval)
    poll_max_bytes = options[POLL_MAX_BYTES]
    host, port = options[LISTEN_ADDRESS]
    telemetry_path = options[TELEMETRY_PATH]
    max_connections = options[MAX_CONNECTIONS]
    read_header_timeout = options[READ_HEADER_TIMEOUT]
    idle_timeout = options[IDLE_TIMEOUT]
    log_level = options[LOG_LEVEL]
    log_format = options[LOG_FORMAT] or ("console" if stdout_is_tty else "json")
    collect_processes = options[COLLECT_PROCESSES]
    processes_max = options[PROCESSES_MAX]
    queues_max, queues_allow = options[QUEUES_MAX], options[QUEUES_ALLOW]
    queues_deny = options[QUEUES_DENY]
    classes_max, classes_allow = options[JOB_CLASSES_MAX], options[JOB_CLASSES_ALLOW]
    classes_deny = options[JOB_CLASSES_DENY]
    label_value_length_max = options[LABEL_VALUE_LENGTH_MAX]
    collect_cron, cron_max = options[COLLECT_CRON], options[CRON_MAX]
    cron_allow, cron_deny = options[CRON_ALLOW], options[CRON_DENY]
    web_config = options[WEB_CONFIG_FILE]
    config = options[CONFIG_FILE]
    return Settings(
        targets=_targets(options, config),
        poll_interval=interval,
        poll_timeout=timeout,
        listen_host=host,
        listen_port=port,
        telemetry_path=telemetry_path,
        log_level=log_level,
        log_format=log_format,
        collect_processes=collect_processes,
        config_file=options.text(CONFIG_FILE),
        web_config_file=web_config,
        max_connections=max_connections,
        read_header_timeout=read_header_timeout,
        idle_timeout=idle_timeout,
        queue_rules=config.queue_rules,
        queues_max=queues_max,
        queues_allow=queues_allow,
        queues_deny=queues_deny,
        job_classes_max=classes_max,
        job_classes_allow=classes_allow,
        job_classes_deny=classes_deny,
        processes_max=processes_max,
        label_value_length_max=label_value_length_max,
        poll_max_bytes=poll_max_bytes,
        collect_cron=collect_cron,
        cron_max=cron_max,
        cron_allow=cron_allow,
        cron_deny=cron_deny,
    )


def _poll_timeout(options: _Options, interval: float) -> float:
    """--poll.timeout, at most the interval; unless given, a share of the interval."""
    timeout = options[POLL_TIMEOUT]
    if timeout is None:
        return interval * DEFAULT_TIMEOUT_RATIO
    if not 0 < timeout <= interval:
        raise options.error(
            POLL_TIMEOUT,
            f"{options.text(POLL_TIMEOUT)!r} is out of range: the poll timeout must be > 0 and "
            f"at most the poll interval ({format_duration(interval)})",
        )
    return timeout


def _targets(options: _Options, config: ConfigFile) -> tuple[TargetSettings, ...]:
    """The config file's targets, else the one the `--redis.*` and `--target.name` flags say."""
    name = options[TARGET_NAME]
    url = options[REDIS_URL]
    prefix = options[REDIS_KEY_PREFIX]
    password = options[REDIS_PASSWORD_FILE]
    try:
        target = build_target(
            name=name,
            url=url,
            key_prefix=prefix,
            password=password,
            password_file=options.text(REDIS_PASSWORD_FILE) or "",
        )
    except ConfigError as exc:
        # Each part is valid on its own by now; what is left is the URL/password-file
        # conflict, which is reported against the password file.
        if password is None:
            raise
        raise options.error(REDIS_PASSWORD_FILE, str(exc)) from None
    if not config.targets:
        return (target,)
    given = [flag for flag in TARGET_FLAGS if options.given(flag)]
    if given:
        sources = ", ".join(options.source(flag) for flag in given)
        raise options.error(
            CONFIG_FILE, f"the file lists targets, so {sources} must not be given too"
        )
    return config.targets
