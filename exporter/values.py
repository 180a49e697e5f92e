"""Values as flags and config files write them: durations, booleans, listen addresses, limits,
regexes and choices, parsed from text and formatted back, with one-line `ConfigError`s.
Knows no flag.
"""

from __future__ import annotations

import re
from typing import Final

from exporter.config_file import ConfigError

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})

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


def parse_limit(text: str) -> int:
    """A positive whole number, for the cardinality limits."""
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"invalid limit {text!r} (use a whole number of at least 1)")
    return int(text)


_BYTE_UNITS: Final = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_BYTES_RE: Final = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB)?")


def parse_bytes(text: str) -> int:
    """A positive size in bytes: `1048576`, `512KiB`, `64MiB`, `1GiB`."""
    match = _BYTES_RE.fullmatch(text.strip())
    if match is None or int(match[1]) < 1:
        raise ConfigError(f"invalid size {text!r} (use a whole number of bytes, KiB, MiB or GiB)")
    return int(match[1]) * _BYTE_UNITS[match[2] or ""]


def format_bytes(count: int) -> str:
    """The inverse of `parse_bytes`, in the largest unit that divides `count`."""
    for unit in ("GiB", "MiB", "KiB"):
        if count % _BYTE_UNITS[unit] == 0:
            return f"{count // _BYTE_UNITS[unit]}{unit}"
    return str(count)


def parse_regex(text: str) -> re.Pattern[str]:
    """A regular expression (Python syntax), matched against whole names."""
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"invalid regex {text!r}: {exc}") from None


def parse_choice(text: str, choices: tuple[str, ...]) -> str:
    """One of `choices`, case-insensitively."""
    lowered = text.strip().lower()
    if lowered not in choices:
        raise ConfigError(f"invalid value {text!r} (choose from {', '.join(choices)})")
    return lowered


def format_value(value: object) -> str:
    """How a default value is shown in `--help` and the reference: `none`, `true`, `""`, ..."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return '""' if value == "" else str(value)
