"""Reading configuration files: their text, their YAML and typed values, with errors that say
where (`tls_server_config.cert_file: ...`), and `ConfigError`, the one-line error every bad
flag, variable or file becomes. Knows no key's meaning.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import yaml

# PyYAML is imported when a file is read, not with this module: a daemon started without
# --config.file or --web.config.file never loads it (less memory).


class ConfigError(Exception):
    """The configuration is invalid; the message is one line naming the problem."""


def read_text(path: str, what: str = "", *, where: str = "") -> str:
    """The UTF-8 text of the file at `path`; ConfigError `cannot read <what>'<path>': <why>`,
    after `<where>: ` when the file is named at `where` in another file."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    prefix = f"{where}: " if where else ""
    raise ConfigError(f"{prefix}cannot read {what}{path!r}: {reason}")


def check_readable(path: str) -> str:
    """`path` if the file can be opened for reading; ConfigError `cannot read '<path>': <why>`."""
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return path


# --------------------------------------------------------------------------- YAML


class YamlSyntaxError(ConfigError):
    """The text is not YAML (or, as Go reads it, repeats a key); `line` is 1-based."""

    def __init__(self, line: int | None, problem: str) -> None:
        self.line = line
        self.problem = problem
        where = f" at line {line}" if line is not None else ""
        super().__init__(f"invalid YAML{where}: {problem}")


def load_yaml(text: str | bytes) -> object:
    """YAML as PyYAML's safe loader reads it (YAML 1.1 types: numbers, booleans, null)."""
    import yaml

    return _load(text, yaml.SafeLoader)


def load_yaml_as_go(text: str | bytes) -> object:
    """YAML as Go's yaml.v2 reads it into string fields (exporter-toolkit's web config).

    Scalars stay text (a user called `0123` or `true` keeps that name; types are checked per
    key), only null and `<<` merge keys are resolved, and a key given twice in one mapping is
    an error.
    """
    return _load(text, _go_loader())


def _load(text: str | bytes, loader: type[yaml.SafeLoader]) -> object:
    import yaml

    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader (subclass): no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise YamlSyntaxError(line, str(exc.problem or exc.context)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(None, " ".join(str(exc).split())) from None


_KEPT_RESOLVERS: Final = ("tag:yaml.org,2002:null", "tag:yaml.org,2002:merge")


@functools.cache
def _go_loader() -> type[yaml.SafeLoader]:
    """The loader of `load_yaml_as_go` (built once, on first use)."""
    import yaml

    class GoLoader(yaml.SafeLoader):
        def construct_mapping(
            self, node: yaml.MappingNode, deep: bool = False
        ) -> dict[Hashable, Any]:
            seen: set[str] = set()
            for key_node, _ in node.value:
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and key_node.tag != "tag:yaml.org,2002:merge"
                ):
                    if key_node.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"key {key_node.value!r} given twice", key_node.start_mark
                        )
                    seen.add(key_node.value)
            return super().construct_mapping(node, deep)

    GoLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag in _KEPT_RESOLVERS]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    return GoLoader


# --------------------------------------------------------------------------- typed values
# `where` names the value's place in the file (`queues[0].sla`, `tls_server_config.key_file`).

# YAML 1.1 booleans, as Go's yaml.v2 reads them.
_YAML_TRUE: Final = frozenset(("y", "yes", "true", "on"))
_YAML_FALSE: Final = frozenset(("n", "no", "false", "off"))


def mapping(value: object, where: str) -> dict[str, object]:
    """A mapping with text keys; None (the key left empty) is an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be text, got {kind(key)}")
    return value


def mappings(value: object, where: str) -> list[dict[str, Any]]:
    """A list of mappings; None (the key left empty) is an empty one."""
    entries = value or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: expected a list of mappings")
    return entries


def text(value: object, where: str) -> str:
    """Text; None (the key left empty) is ""."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected text, got {kind(value)}")
    return value


def texts(value: object, where: str) -> tuple[str, ...] | None:
    """A list of text; None when the key is left empty."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {kind(value)}")
    return tuple(text(item, f"{where}[{i}]") for i, item in enumerate(value))


def go_boolean(value: object, where: str, default: bool) -> bool:
    """A boolean written as YAML 1.1 text (`load_yaml_as_go` keeps scalars as text)."""
    if value is None:
        return default
    # YAML 1.1 spellings: lower case, Capitalised or UPPER CASE (not mIxEd).
    spelling = value.lower() if isinstance(value, str) and value in _cases(value) else ""
    if spelling in _YAML_TRUE:
        return True
    if spelling in _YAML_FALSE:
        return False
    shown = repr(value) if isinstance(value, str) else kind(value)
    raise ConfigError(f"{where}: expected true or false, got {shown}")


def _cases(value: str) -> tuple[str, str, str]:
    lower = value.lower()
    return lower, lower.capitalize(), lower.upper()


def kind(value: object) -> str:
    """How an error message shows a value of the wrong type: its kind, or a scalar itself."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else repr(value)
