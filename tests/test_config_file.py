"""Config files (exporter/config_file.py) and `--config.file`: targets and queue rules,
cardinality flags, and their one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from exporter import config_file
from exporter.config_file import ConfigError, YamlSyntaxError
from exporter.settings import Settings, load_settings
from exporter.targets import QUEUE_KEYS, TARGET_KEYS, FileKey
from tests.support import generated


def load(*argv: str) -> Settings:
    return load_settings(list(argv), {}, stdout_is_tty=False)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_targets_and_queue_rules(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    config = write(
        tmp_path,
        f"""
targets:
  - name: main
    url: redis://10.0.0.1:6379/2
    key_prefix: myapp
    username: exporter
    password_file: {secret}
  - name: ha
    url: redis:///0
    sentinels: ["127.0.0.1:26379", "[::1]:26380", "sentinel-3"]
    sentinel_master: mymaster
queues:
  - name: default
    sla: 30s
    component: core
  - match: "reports_.*"
    sla: 1h
  - match: "legacy"
    component: old
""",
    )
    settings = load("--config.file", config)
    main, ha = settings.targets
    assert (main.name, main.url, main.key_prefix, main.username) == (
        "main",
        "redis://10.0.0.1:6379/2",
        "myapp",
        "exporter",
    )
    assert main.password == "s3cret"
    assert ha.sentinels == (("127.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert ha.sentinel_master == "mymaster"
    default, reports, legacy = settings.queue_rules
    assert (default.name, default.sla, default.component) == ("default", 30.0, "core")
    assert reports.matches("reports_daily")
    assert not reports.matches("old_reports_daily")
    assert reports.sla == 3600.0
    assert legacy.sla is None
    assert settings.config_file == config
    assert "s3cret" not in repr(settings)


def test_tls_target(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = write(
        tmp_path,
        f"targets: [{{name: t, url: 'rediss://r:6380', ca_file: '{ca}', server_name: redis}}]",
    )
    (target,) = load("--config.file", config).targets
    assert (target.tls_ca_file, target.tls_server_name) == (str(ca), "redis")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("targets: {name: x}", "targets: expected a list of mappings"),
        ("targets: [{url: 'redis://x'}]", "targets[0].name: required"),
        ("targets: [{name: a, urll: 'redis://x'}]", "unknown key 'urll'"),
        ("targets: [{name: a, url: 'http://x'}]", "scheme must be"),
        ("targets: [{name: a}, {name: a}]", "target name 'a' is used twice"),
        ("targets: [{name: a, sentinels: ['h:1']}]", "sentinels need sentinel_master"),
        ("targets: [{name: a, ca_file: /nope}]", "TLS settings need a rediss:// URL"),
        ("targets: [{name: a, url: 'rediss://h', ca_file: /nope}]", "no such file '/nope'"),
        ("targets: [{name: a, password_file: /nope}]", "cannot read password file '/nope'"),
        ("queues: [{name: a, match: b}]", "give exactly one of name or match"),
        ("queues: [{match: '('}]", "queues[0].match: invalid regex"),
        ("queues: [{name: a, sla: soon}]", "queues[0].sla: invalid duration"),
        ("queues: [{name: a, sla: 0s}]", "must be more than 0"),
        ("queue: []", "unknown key 'queue'"),
        ("- a\n- b", "expected a mapping"),
        ("targets: [", "not valid YAML at line"),
    ],
)
def test_config_errors_are_one_line_and_name_the_place(
    tmp_path: Path, text: str, message: str
) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load("--config.file", config)
    assert message in str(error.value)
    assert "--config.file" in str(error.value)
    assert "\n" not in str(error.value)


def test_config_targets_and_target_flags_conflict(tmp_path: Path) -> None:
    config = write(tmp_path, "targets: [{name: a}]")
    with pytest.raises(ConfigError, match=re.escape("--redis.url must not be given too")):
        load("--config.file", config, "--redis.url", "redis://other")
    # A file with only queue rules keeps the flag target.
    rules_only = write(tmp_path, "queues: [{name: a, sla: 5s}]")
    (target,) = load("--config.file", rules_only, "--redis.url", "redis://other").targets
    assert target.url == "redis://other"


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match=re.escape("cannot read config file '/nope.yml'")):
        load("--config.file", "/nope.yml")


def test_cardinality_flags() -> None:
    settings = load(
        "--collect.queues.max=10",
        "--collect.queues.allow=billing_.*",
        "--collect.job-classes.max=3",
        "--collect.job-classes.deny=Test.*",
    )
    assert settings.queues_max == 10
    assert settings.queues_allow is not None
    assert settings.queues_allow.pattern == "billing_.*"
    assert settings.job_classes_max == 3
    assert settings.job_classes_deny is not None
    assert load().queues_max == 2000
    assert load().job_classes_max == 500
    with pytest.raises(ConfigError, match=re.escape("--collect.queues.max: invalid limit '0'")):
        load("--collect.queues.max=0")
    with pytest.raises(ConfigError, match=re.escape("--collect.job-classes.allow: invalid regex")):
        load("--collect.job-classes.allow=(")


# --- reading files and YAML (shared with the web config) -------------------------------------


def test_unreadable_files_name_the_file_and_why(tmp_path: Path) -> None:
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match=re.escape("cannot read password file '/nope': No such")):
        config_file.read_text("/nope", "password file ")
    with pytest.raises(ConfigError, match=re.escape(f"cannot read {str(binary)!r}: not UTF-8")):
        config_file.read_text(str(binary))
    with pytest.raises(ConfigError, match=re.escape("cannot read '/nope': No such")):
        config_file.check_readable("/nope")
    assert config_file.check_readable(str(binary)) == str(binary)


def test_yaml_errors_say_the_line() -> None:
    with pytest.raises(YamlSyntaxError) as error:
        config_file.load_yaml("a: 1\nb: [\n")
    assert error.value.line == 3
    assert str(error.value).startswith("invalid YAML at line 3: ")


def test_go_style_yaml_keeps_scalars_as_text_and_refuses_a_repeated_key() -> None:
    # YAML 1.1 reads 0123 as an octal number: why a user called 0123 needs the Go style.
    assert config_file.load_yaml("a: 0123\nb: true\nc:\n") == {"a": 83, "b": True, "c": None}
    assert config_file.load_yaml_as_go("a: 0123\nb: true\nc:\n") == {
        "a": "0123",
        "b": "true",
        "c": None,
    }
    with pytest.raises(YamlSyntaxError, match="key 'a' given twice"):
        config_file.load_yaml_as_go("a: 1\na: 2\n")


def test_typed_values_name_their_place_and_what_was_found() -> None:
    with pytest.raises(ConfigError, match=re.escape("x.y: expected text, got a list")):
        config_file.text(["s"], "x.y")
    with pytest.raises(ConfigError, match=re.escape("x: expected a mapping, got 5")):
        config_file.mapping(5, "x")
    with pytest.raises(ConfigError, match=re.escape("x: expected a list of mappings")):
        config_file.mappings({"a": 1}, "x")
    with pytest.raises(ConfigError, match=re.escape("x[1]: expected text, got 1")):
        config_file.texts(["a", 1], "x")
    assert config_file.go_boolean("Off", "x", True) is False
    with pytest.raises(ConfigError, match=re.escape("x: expected true or false, got 'oFF'")):
        config_file.go_boolean("oFF", "x", True)


def test_an_empty_text_key_in_the_config_file_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path, "targets: [{name: a, url: }]")
    with pytest.raises(ConfigError, match=re.escape("targets[0] (a).url: expected text, got null")):
        load("--config.file", config)


# --- the key rows and the reference -------------------------------------------------------


@pytest.mark.parametrize(("section", "keys"), [("targets", TARGET_KEYS), ("queues", QUEUE_KEYS)])
def test_every_documented_key_is_a_row_the_file_accepts(
    tmp_path: Path, section: str, keys: tuple[FileKey[object], ...]
) -> None:
    page = (generated.ROOT / "docs/configuration.md").read_text()
    table = page.split(f"### `{section}:` entries", 1)[1].split("\n### ", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert documented == [key.name for key in keys]  # every row, in order, and nothing else
    for key in documented:  # each one is known to the parser (a wrong type, not "unknown key")
        config = write(tmp_path, f"{section}: [{{name: a, {key}: [1]}}]")
        with pytest.raises(ConfigError) as error:
            load("--config.file", config)
        assert "unknown key" not in str(error.value), key
    config = write(tmp_path, f"{section}: [{{name: a, not_a_key: 1}}]")
    with pytest.raises(ConfigError, match="unknown key 'not_a_key'"):
        load("--config.file", config)
