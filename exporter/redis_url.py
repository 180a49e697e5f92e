"""Redis URLs as text: validating one, showing one without its credentials, finding its password.

Never connects (exporter/connection.py does) and never shows a credential in an error.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote, urlsplit

from exporter.config_file import ConfigError

REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
REDACTED: Final = "***"  # what replaces a credential wherever a URL or setting is shown
_SECRET_QUERY_KEYS: Final = frozenset({"password", "username"})


def redacted_url(url: str) -> str:
    """`url` with any username and password (in the authority or the query) replaced by `***`.

    An unescaped "/", "?" or "#" in a password ends what `urlsplit` takes for the authority, so
    the "@" after the password lands in the path, query or fragment (`redis://:se/cret@h/0`
    splits into netloc `:se` and path `/cret@h/0`). So an "@" anywhere past the authority is
    taken as the end of credentials and everything before the last one is shown as `***`,
    unless that "@" is inside a `password=`/`username=` query value, which is hidden anyway.
    A fragment means nothing in a Redis URL but holds the rest of a query secret cut at an
    unescaped "#", so it is hidden too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        # Can't tell where the credentials are, so show nothing of it.
        return "<unparseable URL>"
    netloc = parts.netloc
    # rpartition like urlsplit itself: an unescaped "@" inside a password stays in userinfo.
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = (REDACTED if user else "") + (f":{REDACTED}" if colon else "") + "@" + hostport
    rest = parts.path
    if parts.query:
        rest += "?" + "&".join(_redact_query_item(item) for item in parts.query.split("&"))
    if parts.fragment:
        rest += "#" + (parts.fragment if "@" in parts.fragment else REDACTED)
    scheme = f"{parts.scheme}://"
    if url.count("@") == parts.netloc.count("@"):  # every "@" is in the authority: the usual case
        return scheme + netloc + rest
    if not "".join(url.split()).lower().startswith(scheme):
        # No "scheme://": what urlsplit took for a scheme may be a user name ("admin:pw@host").
        scheme = ""
    if "@" in rest:
        return f"{scheme}{REDACTED}@{rest.rpartition('@')[2]}"
    # Each "@" past the authority was inside a hidden query value ("?password=a@b"); the
    # authority may still be the start of a password cut short by an unescaped "?".
    return scheme + (REDACTED if netloc else "") + rest


def _redact_query_item(item: str) -> str:
    key, eq, _value = item.partition("=")
    if eq and unquote(key).lower() in _SECRET_QUERY_KEYS:
        return f"{key}={REDACTED}"
    return item


def url_password(url: str) -> str | None:
    """The password embedded in a Redis URL (authority or `?password=`), or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.password:
        return unquote(parts.password)
    for item in parts.query.split("&"):
        key, eq, value = item.partition("=")
        if eq and unquote(key).lower() == "password" and value:
            return unquote(value)
    return None


def validate_redis_url(url: str) -> None:
    """Raise ConfigError unless `url` is a redis://, rediss:// or unix:// URL redis-py accepts."""
    shown = redacted_url(url)

    def invalid(reason: str) -> ConfigError:
        # Fixed reasons only: urllib's error texts quote parts of the URL (a mis-split password).
        return ConfigError(f"invalid Redis URL {shown!r}: {reason}")

    try:
        parts = urlsplit(url)
    except ValueError:
        raise invalid(
            "not a URL ('[' and ']' go around an IPv6 host, percent-encode them elsewhere)"
        ) from None
    # An "@" past the authority, other than in a query value ("?password=a@b") or a socket
    # path, is the end of a password that an unescaped "/", "?" or "#" cut off (see
    # redacted_url): refuse it rather than connect somewhere else without it.
    misplaced = "@" in parts.fragment or any(
        "@" in item.partition("=")[0] for item in parts.query.split("&")
    )
    if parts.scheme != "unix":
        misplaced = misplaced or "@" in parts.path
    hint = "; percent-encode '/', '?', '#' and '@' in the user name and password"
    try:
        _ = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError:
        raise invalid(
            "the port must be a number from 0 to 65535" + (hint if misplaced else "")
        ) from None
    if parts.scheme not in REDIS_SCHEMES:
        raise invalid("scheme must be redis://, rediss:// or unix://")
    if misplaced:
        raise invalid("'@' after the host" + hint)
    if parts.scheme == "unix":
        if not parts.path:
            raise invalid("unix:// needs a socket path")
    elif parts.path not in ("", "/") and not parts.path.lstrip("/").isdigit():
        raise invalid("the path must be a database number")
