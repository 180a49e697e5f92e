"""Redis URLs (exporter/redis_url.py): credentials never shown, passwords found."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config_file import ConfigError
from exporter.redis_url import redacted_url, url_password, validate_redis_url


@given(
    user=st.text(st.sampled_from("ab:/?#@%&=[]"), max_size=6),
    password=st.text(st.sampled_from("ab:/?#@%&=[]"), max_size=12),
)
def test_redacted_url_never_shows_unescaped_credentials(user: str, password: str) -> None:
    # Marker-wrapped: whichever way urlsplit cuts the URL, both ends of each must be hidden.
    url = f"redis://USER{user}USER:PASS{password}PASS@example.org:6379/0"
    texts = [redacted_url(url)]
    try:
        validate_redis_url(url)
    except ConfigError as exc:
        texts.append(str(exc))
    for text in texts:
        assert "USER" not in text
        assert "PASS" not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user:pw@host:6379/0", "redis://***:***@host:6379/0"),
        ("redis://:pw@host/0", "redis://:***@host/0"),
        ("redis://user@host/0", "redis://***@host/0"),
        ("redis://u:p@ss@host/0", "redis://***:***@host/0"),
        ("rediss://u:p%40ss@[::1]:6380/1", "rediss://***:***@[::1]:6380/1"),
        (
            "unix:///run/r.sock?db=1&password=pw&Username=u",
            "unix:///run/r.sock?db=1&password=***&Username=***",
        ),
        ("unix://:pw@/run/r.sock?db=0", "unix://:***@/run/r.sock?db=0"),
        ("redis://[broken", "<unparseable URL>"),
        ("redis://:se/cret@host:6379/0", "redis://***@host:6379/0"),
        ("redis://u:a?b@host/0", "redis://***@host/0"),
        ("redis://:x#y@host/0", "redis://***@host/0"),
        ("admin:pw@host:6379/0", "***@host:6379/0"),  # no scheme: "admin" is not one
        ("unix:///s.sock?password=p@ss", "unix:///s.sock?password=***"),
        ("unix:///s.sock?password=x#y", "unix:///s.sock?password=***#***"),
        ("redis://h/0?password=p@ss", "redis://***/0?password=***"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_url_password() -> None:
    assert url_password("redis://u:p%40ss@h/0") == "p@ss"
    assert url_password("unix:///s?password=a%20b") == "a b"
    assert url_password("redis://u@h/0") is None
    assert url_password("redis://[broken") is None


_SECRET_CHARS = st.characters(codec="utf-8")


@given(
    user=st.text(_SECRET_CHARS, min_size=1, max_size=20),
    password=st.text(_SECRET_CHARS, min_size=1, max_size=30),
    in_query=st.booleans(),
)
def test_redacted_url_never_shows_credentials(user: str, password: str, in_query: bool) -> None:
    # Marker-wrapped so a short secret can't collide with the rest of the URL.
    user, password = f"USER{user}USER", f"PASS{password}PASS"
    if in_query:
        url = f"unix:///tmp/r.sock?username={quote(user)}&password={quote(password)}&db=0"
    else:
        url = f"redis://{quote(user, safe='')}:{quote(password, safe='')}@example.org:6379/0"
    shown = redacted_url(url)
    for secret in (user, password, quote(user, safe=""), quote(password, safe="")):
        assert secret not in shown
    assert "***" in shown
