"""Settings: flags, environment defaults, validation and redaction."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from exporter import __version__
from exporter.config_file import ConfigError
from exporter.redis_url import redacted_url
from exporter.settings import (
    FLAGS,
    LISTEN_ADDRESS,
    POLL_INTERVAL,
    QUEUES_MAX,
    REDIS_URL,
    InfoRequested,
    Settings,
    build_parser,
    env_var,
    load_settings,
)
from exporter.targets import TargetSettings, build_target
from exporter.values import (
    format_bytes,
    format_duration,
    format_listen_address,
    parse_bool,
    parse_bytes,
    parse_duration,
    parse_listen_address,
)
from tests.support import generated


def load(
    argv: Sequence[str] = (), env: Mapping[str, str] | None = None, tty: bool = False
) -> Settings:
    return load_settings(argv, env or {}, stdout_is_tty=tty)


def config_error(argv: Sequence[str] = (), env: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(argv, env)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- defaults and sources -------------------------------------------------------------------


def test_defaults() -> None:
    s = load()
    assert s.targets == (
        TargetSettings(
            name="default",
            url="redis://localhost:6379/0",
            username=None,
            password=None,
            key_prefix="",
        ),
    )
    assert s.poll_interval == 10.0
    assert s.poll_timeout == pytest.approx(8.0)
    assert (s.listen_host, s.listen_port, s.listen_address) == ("", 8743, ":8743")
    assert s.telemetry_path == "/metrics"
    assert s.log_level == "info"
    assert s.log_format == "json"
    assert s.collect_processes is True
    assert s.shutdown_timeout == 5.0
    assert (s.max_connections, s.read_header_timeout, s.idle_timeout) == (512, 10.0, 120.0)


def test_log_format_defaults_to_console_on_a_tty() -> None:
    assert load(tty=True).log_format == "console"
    assert load(["--log.format=json"], tty=True).log_format == "json"


def test_every_flag() -> None:
    s = load(
        [
            "--redis.url=rediss://cache.example:6380/2",
            "--redis.key-prefix=sidekiq",
            "--target.name=billing",
            "--poll.interval=30s",
            "--poll.timeout=5s",
            "--web.listen-address=127.0.0.1:9000",
            "--web.telemetry-path=/probe",
            "--web.max-connections=64",
            "--web.read-header-timeout=2500ms",
            "--web.idle-timeout=30s",
            "--log.level=DEBUG",
            "--log.format=console",
            "--no-collect.processes",
        ]
    )
    (target,) = s.targets
    assert (target.name, target.url, target.key_prefix) == (
        "billing",
        "rediss://cache.example:6380/2",
        "sidekiq",
    )
    assert (s.poll_interval, s.poll_timeout) == (30.0, 5.0)
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 9000)
    assert s.telemetry_path == "/probe"
    assert (s.max_connections, s.read_header_timeout, s.idle_timeout) == (64, 2.5, 30.0)
    assert (s.log_level, s.log_format) == ("debug", "console")
    assert s.collect_processes is False


ENV = {
    "SIDEKIQ_EXPORTER_REDIS_URL": "redis://env-host:6379/1",
    "SIDEKIQ_EXPORTER_REDIS_KEY_PREFIX": "ns",
    "SIDEKIQ_EXPORTER_TARGET_NAME": "from-env",
    "SIDEKIQ_EXPORTER_POLL_INTERVAL": "1m",
    "SIDEKIQ_EXPORTER_POLL_TIMEOUT": "20s",
    "SIDEKIQ_EXPORTER_WEB_LISTEN_ADDRESS": "[::1]:8000",
    "SIDEKIQ_EXPORTER_WEB_TELEMETRY_PATH": "/m",
    "SIDEKIQ_EXPORTER_WEB_MAX_CONNECTIONS": "100",
    "SIDEKIQ_EXPORTER_WEB_READ_HEADER_TIMEOUT": "3s",
    "SIDEKIQ_EXPORTER_WEB_IDLE_TIMEOUT": "1m",
    "SIDEKIQ_EXPORTER_LOG_LEVEL": "warning",
    "SIDEKIQ_EXPORTER_LOG_FORMAT": "console",
    "SIDEKIQ_EXPORTER_COLLECT_PROCESSES": "false",
}


def test_environment_defaults() -> None:
    s = load(env=ENV)
    (target,) = s.targets
    assert (target.url, target.key_prefix, target.name) == (
        "redis://env-host:6379/1",
        "ns",
        "from-env",
    )
    assert (s.poll_interval, s.poll_timeout) == (60.0, 20.0)
    assert (s.listen_host, s.listen_port, s.listen_address) == ("::1", 8000, "[::1]:8000")
    assert (s.telemetry_path, s.log_level, s.log_format) == ("/m", "warning", "console")
    assert (s.max_connections, s.read_header_timeout, s.idle_timeout) == (100, 3.0, 60.0)
    assert s.collect_processes is False


def test_flags_win_over_environment() -> None:
    s = load(["--poll.interval=30s", "--collect.processes", "--target.name=flag"], env=ENV)
    assert (s.poll_interval, s.poll_timeout) == (30.0, 20.0)
    assert s.collect_processes is True
    assert s.targets[0].name == "flag"
    # --poll.timeout still comes from the environment and must fit the flag's interval.
    assert "SIDEKIQ_EXPORTER_POLL_TIMEOUT" in config_error(["--poll.interval=10s"], env=ENV)


def test_empty_environment_variables_count_as_unset() -> None:
    assert (
        load(env={"SIDEKIQ_EXPORTER_REDIS_URL": "", "SIDEKIQ_EXPORTER_POLL_INTERVAL": ""}) == load()
    )


@pytest.mark.parametrize(
    ("flag", "variable"),
    [
        ("redis.url", "SIDEKIQ_EXPORTER_REDIS_URL"),
        ("--redis.password-file", "SIDEKIQ_EXPORTER_REDIS_PASSWORD_FILE"),
        ("web.listen-address", "SIDEKIQ_EXPORTER_WEB_LISTEN_ADDRESS"),
        ("collect.processes", "SIDEKIQ_EXPORTER_COLLECT_PROCESSES"),
    ],
)
def test_env_var_names(flag: str, variable: str) -> None:
    assert env_var(flag) == variable


def test_help_shows_every_environment_variable() -> None:
    with pytest.raises(InfoRequested) as info:
        load(["--help"])
    text = " ".join(info.value.text.split())  # argparse wraps lines
    for flag in (
        "redis.url",
        "redis.password-file",
        "redis.key-prefix",
        "target.name",
        "poll.interval",
        "poll.timeout",
        "web.listen-address",
        "web.telemetry-path",
        "log.level",
        "log.format",
        "collect.processes",
    ):
        assert f"--{flag}" in text
        assert f"[env: {env_var(flag)}]" in text
    assert "--no-collect.processes" in text
    assert "80% of the interval" in text


def test_version() -> None:
    with pytest.raises(InfoRequested) as info:
        load(["--version", "--poll.interval=nonsense"])
    assert info.value.text == f"sidekiq-exporter {__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [["--nope"], ["positional"], ["--redis.u=redis://x"], ["--poll.interval"]],
)
def test_argparse_errors_become_config_errors(argv: list[str]) -> None:
    config_error(argv)


# --- durations and poll timing ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("1h2m3s4ms", 3723.004),
        (" 10s ", 10.0),
        ("0s", 0.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "10", "s", "-1s", "1d", "10S", "1s1m", "1m1m", "ten s", "1.s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "500ms"),
        (1, "1s"),
        (10, "10s"),
        (60, "1m"),
        (90, "1m30s"),
        (300, "5m"),
        (1.5, "1.5s"),
        (3600, "1h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("1", 1),
        ("1048576", 1024**2),
        ("512KiB", 512 * 1024),
        (" 64MiB ", 64 * 1024**2),
        ("1GiB", 1024**3),
    ],
)
def test_parse_bytes(text: str, count: int) -> None:
    assert parse_bytes(text) == count
    assert parse_bytes(format_bytes(count)) == count


@pytest.mark.parametrize("text", ["", "0", "0MiB", "-1", "64MB", "1.5MiB", "64 mib", "MiB"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid size"):
        parse_bytes(text)


@pytest.mark.parametrize(("text", "seconds"), [("1s", 1.0), ("5m", 300.0), ("1500ms", 1.5)])
def test_poll_interval_limits_inclusive(text: str, seconds: float) -> None:
    s = load([f"--poll.interval={text}"])
    assert s.poll_interval == seconds
    assert s.poll_timeout == pytest.approx(0.8 * seconds)


@pytest.mark.parametrize("text", ["999ms", "5m1s", "0s", "1h"])
def test_poll_interval_out_of_range(text: str) -> None:
    message = config_error([f"--poll.interval={text}"])
    assert message.startswith("--poll.interval:")
    assert "between 1s and 5m" in message


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--web.max-connections=0"], "--web.max-connections: invalid limit '0'"),
        (["--web.max-connections=many"], "--web.max-connections: invalid limit 'many'"),
        (["--web.read-header-timeout=0s"], "--web.read-header-timeout: '0s' is out of range"),
        (["--web.read-header-timeout=2h"], "--web.read-header-timeout: '2h' is out of range"),
        (["--web.idle-timeout=soon"], "--web.idle-timeout: invalid duration 'soon'"),
    ],
)
def test_web_limits_rejected(argv: list[str], reason: str) -> None:
    assert config_error(argv).startswith(reason)


def test_poll_timeout() -> None:
    assert load(["--poll.interval=10s", "--poll.timeout=10s"]).poll_timeout == 10.0
    assert load(["--poll.timeout=100ms"]).poll_timeout == 0.1
    assert "at most the poll interval (10s)" in config_error(["--poll.timeout=11s"])
    assert "> 0" in config_error(["--poll.timeout=0s"])
    assert "--poll.timeout" in config_error(["--poll.timeout=soon"])


def test_parse_bool() -> None:
    assert all(parse_bool(v) for v in ("1", "true", "TRUE", "yes", "on"))
    assert not any(parse_bool(v) for v in ("0", "false", "False", "no", "off"))
    message = config_error(env={"SIDEKIQ_EXPORTER_COLLECT_PROCESSES": "maybe"})
    assert message.startswith("SIDEKIQ_EXPORTER_COLLECT_PROCESSES:")


# --- web -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        (":8743", "", 8743),
        ("0.0.0.0:80", "0.0.0.0", 80),
        ("localhost:0", "localhost", 0),
        ("[::1]:9000", "::1", 9000),
        ("[::]:65535", "::", 65535),
    ],
)
def test_listen_address(text: str, host: str, port: int) -> None:
    assert parse_listen_address(text) == (host, port)
    assert format_listen_address(host, port) == text


@pytest.mark.parametrize(
    "text",
    [
        "8743",
        "host",
        ":",
        ":65536",
        ":-1",
        ":http",
        "::1:80",
        "[::1]",
        "[]:80",
        "[::1]80",
        "a b:80",
    ],
)
def test_listen_address_rejects(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid listen address"):
        parse_listen_address(text)
    assert config_error([f"--web.listen-address={text}"]).startswith("--web.listen-address:")


@pytest.mark.parametrize("path", ["metrics", "/", "/-/ready", "/-/healthy", "/me trics", "/m?x=1"])
def test_telemetry_path_rejects(path: str) -> None:
    assert config_error([f"--web.telemetry-path={path}"]).startswith("--web.telemetry-path:")


def test_log_choices() -> None:
    assert "choose from debug, info, warning, error" in config_error(["--log.level=trace"])
    assert "choose from json, console" in config_error(["--log.format=logfmt"])


# --- Redis target ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6379",
        "redis://localhost:6379/",
        "redis://user:pw@localhost:6379/15",
        "rediss://cache.example:6380/0?ssl_cert_reqs=none",
        "unix:///run/redis.sock",
        "unix:///run/redis.sock?db=3",
        "redis://[::1]:6379/0",
    ],
)
def test_redis_urls_accepted(url: str) -> None:
    assert load([f"--redis.url={url}"]).targets[0].url == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://localhost:6379", "scheme must be"),
        ("localhost:6379", "scheme must be"),
        ("redis+sentinel://x", "scheme must be"),
        ("unix://", "socket path"),
        ("redis://localhost:port/0", "invalid Redis URL"),
        ("redis://localhost:99999/0", "invalid Redis URL"),
        ("redis://localhost/zero", "database number"),
    ],
)
def test_redis_urls_rejected(url: str, reason: str) -> None:
    message = config_error([f"--redis.url={url}"])
    assert message.startswith("--redis.url:")
    assert reason in message


def test_url_errors_never_show_the_password() -> None:
    message = config_error(["--redis.url=http://admin:s3cr3t@host:6379/0"])
    assert "s3cr3t" not in message
    assert "admin" not in message
    assert "http://***:***@host:6379/0" in message


# An unescaped "/", "?" or "#" ends what urlsplit takes for the authority, moving the "@" and
# the password after it into the path, query or fragment; "@" and "%2F" are the escaped kinds.
NASTY_PASSWORDS = ("se/cret", "a?b", "x#y", "p@ss", "%2F", "s3kr1t/w0rd", "s3kr1t?w0rd")


def nasty_config_errors(url: str, tmp_path: Path) -> list[str]:
    """The ConfigError messages (none if accepted) for `url` as flag, variable and file entry."""
    config = tmp_path / "config.yml"
    config.write_text(f"targets:\n  - name: main\n    url: {json.dumps(url)}\n")
    messages = []
    for argv, env in (
        ([f"--redis.url={url}"], {}),
        ([], {"SIDEKIQ_EXPORTER_REDIS_URL": url}),
        ([f"--config.file={config}"], {}),
    ):
        try:
            load(argv, env)
        except ConfigError as exc:
            messages.append(str(exc))
    return messages


@pytest.mark.parametrize("password", NASTY_PASSWORDS)
@pytest.mark.parametrize("user", ["", "admin"])
def test_unescaped_passwords_are_never_shown(user: str, password: str, tmp_path: Path) -> None:
    url = f"redis://{user}:{password}@host:6379/0"
    shown = redacted_url(url)
    assert shown.endswith("***@host:6379/0")
    texts = [shown, *nasty_config_errors(url, tmp_path)]
    if password not in ("p@ss", "%2F"):  # those two are valid URLs
        assert len(texts) == 4
    for text in texts:
        assert password not in text
        assert "s3kr1t" not in text
        assert "w0rd" not in text
        if user:
            assert user not in text
        # urllib's own error text quotes the URL ("Port could not be cast ... as 'se'").
        assert "could not be cast" not in text


def test_unescaped_password_errors_say_what_to_do() -> None:
    message = config_error(["--redis.url=redis://:se/cret@host:6379/0"])
    assert message == (
        "--redis.url: invalid Redis URL 'redis://***@host:6379/0': the port must be a number "
        "from 0 to 65535; percent-encode '/', '?', '#' and '@' in the user name and password"
    )
    # With a numeric start the port parses, and the "@" is found after the host instead of
    # the URL being taken as localhost:123 without a password.
    for url in ("redis://:123?cret@host/0", "redis://:123#cret@host/0", "redis://u:1/c@h/0"):
        message = config_error([f"--redis.url={url}"])
        assert "'@' after the host; percent-encode" in message
        assert "cret" not in message
        assert "1/c" not in message
    # An "@" inside a query value is not misplaced.
    target = load(["--redis.url=unix:///run/r.sock?password=p@ss"]).targets[0]
    assert target.redacted_url == "unix:///run/r.sock?password=***"


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p@ss word\n")
    target = load([f"--redis.password-file={secret}"]).targets[0]
    assert target.password == "p@ss word"
    secret.write_text("crlf\r\n")
    assert (
        load(env={"SIDEKIQ_EXPORTER_REDIS_PASSWORD_FILE": str(secret)}).targets[0].password
        == "crlf"
    )


def test_password_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    message = config_error([f"--redis.password-file={missing}"])
    assert message.startswith("--redis.password-file:")
    assert str(missing) in message
    assert "No such file" in message
    assert str(tmp_path) in config_error([f"--redis.password-file={tmp_path}"])  # a directory
    empty = tmp_path / "empty"
    empty.write_text("\n")
    assert "is empty" in config_error([f"--redis.password-file={empty}"])
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in config_error([f"--redis.password-file={binary}"])


def test_password_in_url_and_file_conflict(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret\n")
    for url in ("redis://:url-secret@host/0", "unix:///s.sock?password=url-secret"):
        message = config_error([f"--redis.url={url}", f"--redis.password-file={secret}"])
        assert message.startswith("--redis.password-file:")
        assert "not both" in message
        assert "url-secret" not in message
    # A user name in the URL with the password from a file is the normal split.
    target = load(
        ["--redis.url=redis://exporter@host/0", f"--redis.password-file={secret}"]
    ).targets[0]
    assert target.password == "file-secret"


def test_key_prefix_must_be_a_namespace_name() -> None:
    assert load(["--redis.key-prefix=sidekiq"]).targets[0].key_prefix == "sidekiq"
    message = config_error(["--redis.key-prefix=sidekiq:"])
    assert message.startswith("--redis.key-prefix:")
    assert "'sidekiq' reads 'sidekiq:queues'" in message


def test_target_name_must_be_printable() -> None:
    assert config_error(["--target.name= "]).startswith("--target.name:")
    assert config_error(["--target.name=a\tb"]).startswith("--target.name:")


def test_build_target_is_reusable() -> None:
    target = build_target(name="t", url="redis://h/1", key_prefix="ns", username="u", password="p")
    assert (target.username, target.password) == ("u", "p")
    with pytest.raises(ConfigError):
        build_target(name="t", url="ftp://h")


def test_target_repr_hides_credentials() -> None:
    target = build_target(name="t", url="redis://user:in-url@h/0")
    target_with_file = build_target(
        name="t", url="redis://h/0", username="bob", password="from-file"
    )
    for text in (repr(target), repr(target_with_file), repr(Settings(
        targets=(target, target_with_file), poll_interval=1, poll_timeout=1, listen_host="",
        listen_port=1, telemetry_path="/m", log_level="info", log_format="json",
        collect_processes=True,
    ))):  # fmt: skip
        assert "in-url" not in text
        assert "from-file" not in text
        assert "bob" not in text
        assert "***" in text


# --- the rows: --help and the configuration reference ----------------------------------------


def help_text() -> str:
    with pytest.raises(InfoRequested) as info:
        load(["--help"])
    return " ".join(info.value.text.split())  # argparse wraps lines


def test_help_shows_each_rows_default_and_variable() -> None:
    text = help_text()
    for flag in FLAGS:
        assert f"--{flag.name}" in text
        shown = " ".join(f"[env: {flag.env}] (default: {flag.default_text})".split())
        assert shown in text, flag.name


def test_row_defaults_are_the_settings_defaults() -> None:
    settings = load()
    assert format_duration(settings.poll_interval) == POLL_INTERVAL.default_text
    assert settings.listen_address == LISTEN_ADDRESS.default_text
    assert settings.targets[0].url == REDIS_URL.default
    assert (
        settings.queues_max
        == QUEUES_MAX.default
        == Settings.__dataclass_fields__["queues_max"].default
    )


def test_configuration_reference_is_the_rows_rendered() -> None:
    problem = generated.stale("docs/configuration.md")
    assert problem is None, problem
    page = (generated.ROOT / "docs/configuration.md").read_text()
    flags_section = page.split("## Flags", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `--([a-z.-]+)`", flags_section, flags=re.MULTILINE)
    # Both ways: every row is documented, and every documented flag is one the parser takes.
    assert documented == [flag.name for flag in FLAGS]
    parser_flags = {
        option.removeprefix("--")
        for action in build_parser()._actions
        for option in action.option_strings
        if option.startswith("--") and not option.startswith("--no-")
    } - {"help", "version"}
    assert set(documented) == parser_flags
    for flag in FLAGS:
        assert f"`{flag.env}`" in flags_section


def test_cron_flags() -> None:
    s = load()
    assert (s.collect_cron, s.cron_max, s.cron_allow, s.cron_deny) == (True, 500, None, None)
    s = load(["--no-collect.cron", "--collect.cron.max=20", "--collect.cron.deny=tmp_.*"])
    assert (s.collect_cron, s.cron_max) == (False, 20)
    assert s.cron_deny is not None
    assert s.cron_deny.pattern == "tmp_.*"
    assert load(env={"SIDEKIQ_EXPORTER_COLLECT_CRON": "false"}).collect_cron is False
    assert "--collect.cron.max: invalid limit '0'" in config_error(["--collect.cron.max=0"])
    assert "--collect.cron.allow: invalid regex" in config_error(["--collect.cron.allow=("])
