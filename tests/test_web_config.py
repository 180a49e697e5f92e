"""`--web.config.file` (exporter-toolkit format): parser, middleware, TLS, and the real daemon.

Certificates are made here with the openssl CLI (tests/support/tls.py); every web config file
a test calls valid is also checked with `promtool check web-config` (Debian's prometheus
package), and so are the invalid ones, so "promtool accepts it" and "we accept it" agree except
where docs/security.md says we are stricter.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from exporter import cli
from exporter.config_file import ConfigError
from exporter.settings import Settings
from exporter.store import Store
from exporter.targets import build_target
from exporter.web import auth
from exporter.web import config as web_config
from exporter.web.app import create_app
from exporter.web.auth import RateLimit
from exporter.web.config import (
    ServedWebConfig,
    WebConfig,
    load_web_config,
    parse_go_duration,
    parse_web_config,
)
from exporter.web.server import HttpCounters
from tests.support.exporter_process import REPO_ROOT, ListeningExporter
from tests.support.redis_server import free_port
from tests.support.tls import CertPair, Pki, make_pki

PASSWORD = "correct horse"
# Cost 4 keeps the tests fast; the cost does not change how a hash is checked.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
# htpasswd -B writes $2y$: the same algorithm under another name.
HASH_2Y = "$2y$" + bcrypt.hashpw(b"apache", bcrypt.gensalt(4)).decode()[4:]
PROMTOOL = "/usr/bin/promtool"
ALL_PATHS = ("/", "/metrics", "/-/healthy", "/-/ready", "/no-such-page")


# --------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Certs:
    pki: Pki  # ca, server (SAN 127.0.0.1), client (no SAN), other_ca
    scraper: CertPair  # client signed by the CA, SAN DNS:scraper.example
    intruder: CertPair  # client signed by the CA, SAN DNS:intruder.example
    rogue: CertPair  # client signed by the untrusted CA, SAN DNS:scraper.example
    server2: CertPair  # another server certificate (rotation)

    @property
    def ca(self) -> CertPair:
        return self.pki.ca

    @property
    def server(self) -> CertPair:
        return self.pki.server


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


def _leaf(directory: Path, name: str, ca: CertPair, extensions: str) -> CertPair:
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    ext.write_text(f"basicConstraints=CA:FALSE\n{extensions}\n")
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(pair.key))  # fmt: skip
    _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
             "-CAcreateserial", "-out", str(pair.cert), "-days", "2",
             "-extfile", str(ext))  # fmt: skip
    return pair


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(directory)
    client = "extendedKeyUsage=clientAuth\nsubjectAltName="
    return Certs(
        pki=pki,
        scraper=_leaf(directory, "scraper", pki.ca, client + "DNS:scraper.example"),
        intruder=_leaf(directory, "intruder", pki.ca, client + "DNS:intruder.example"),
        rogue=_leaf(directory, "rogue", pki.other_ca, client + "DNS:scraper.example"),
        server2=_leaf(
            directory, "server2", pki.ca, "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1"
        ),
    )


def promtool_accepts(path: Path, cwd: Path | None = None) -> bool:
    result = subprocess.run(
        [PROMTOOL, "check", "web-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=cwd,
        check=False,
    )
    return result.returncode == 0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tls_yaml(certs: Certs, extra: str = "") -> str:
    return (
        f"tls_server_config:\n  cert_file: {certs.server.cert}\n"
        f"  key_file: {certs.server.key}\n{extra}"
    )


def mtls_yaml(certs: Certs, extra: str = "") -> str:
    return tls_yaml(
        certs,
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca.cert}\n"
        + extra,
    )


# --------------------------------------------------------------------------- parser


def test_promtool_is_installed() -> None:
    # A failure, not a skip: the compatibility claims below rest on it.
    assert os.access(PROMTOOL, os.X_OK), "promtool missing (apt-get install prometheus)"


@pytest.mark.parametrize("text", ["", "# nothing\n", "{}\n", "tls_server_config:\n"])
def test_empty_file_means_plain_http_without_auth(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "web.yml", text)
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None
    assert config.tls is None
    assert config.create_ssl_context() is None
    assert config.guard() is None


def test_no_file_no_config() -> None:
    assert load_web_config(None) is None


def test_full_file_is_read(tmp_path: Path, certs: Certs) -> None:
    text = mtls_yaml(
        certs,
        "  min_version: TLS13\n  max_version: TLS13\n"
        "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n"
        "  prefer_server_cipher_suites: false\n  curve_preferences: [X25519, CurveP256]\n"
        "http_server_config:\n  http2: false\n"
        "  headers: {X-Frame-Options: deny, Strict-Transport-Security: max-age=31536000}\n"
        f"basic_auth_users:\n  prometheus: {HASH}\n  0123: {HASH_2Y}\n",
    )
    path = write(tmp_path / "web.yml", text)
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None
    assert config.tls is not None
    assert config.tls.verify_mode == ssl.CERT_REQUIRED
    assert config.tls.min_version == config.tls.max_version == ssl.TLSVersion.TLSv1_3
    assert config.tls.openssl_ciphers == ("ECDHE-ECDSA-AES128-GCM-SHA256",)  # 1.3 suites: fixed
    assert config.tls.openssl_curves == ("X25519", "prime256v1")
    assert config.tls.prefer_server_cipher_suites is False
    assert config.http2 is False
    assert config.headers == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000",
    }
    # YAML scalars stay text, as Go reads them: the user is "0123", not 83 or 123.
    assert set(config.basic_auth_users) == {"prometheus", "0123"}
    context = config.create_ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_3
    assert not context.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert HASH not in repr(config)


def test_relative_paths_are_relative_to_the_file(
    tmp_path: Path, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "etc"
    directory.mkdir()
    for source in (certs.server.cert, certs.server.key):
        shutil.copy(source, directory / source.name)
    path = write(
        directory / "web.yml",
        f"tls_server_config:\n  cert_file: {certs.server.cert.name}\n"
        f"  key_file: {certs.server.key.name}\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert promtool_accepts(path, cwd=elsewhere)
    config = load_web_config(str(path))
    assert config is not None
    assert config.tls is not None
    assert config.tls.cert_file == str(directory / certs.server.cert.name)


def test_yaml_merge_keys(tmp_path: Path) -> None:
    text = f"basic_auth_users:\n  <<: {{a: '{HASH}'}}\n  b: '{HASH}'\n"
    path = write(tmp_path / "web.yml", text)
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None
    assert set(config.basic_auth_users) == {"a", "b"}


def test_tls_settings_without_a_certificate_leave_plain_http(tmp_path: Path) -> None:
    # As exporter-toolkit: TLS is on once a certificate, key, CA or client_auth_type is given.
    path = write(tmp_path / "web.yml", "tls_server_config:\n  min_version: TLS13\n")
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None
    assert config.tls is None


# (name, file text with {cert} {key} {ca} {hash} {ca_key} placeholders, key the message names,
#  promtool 2.42 rejects it too)
BAD_FILES = [
    ("unknown top-level key", "basic_auth_user:\n  a: {hash}\n", "basic_auth_user", True),
    (
        "unknown TLS key",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, certfile: x}}\n",
        "tls_server_config.certfile",
        True,
    ),
    ("not a bcrypt hash", "basic_auth_users:\n  admin: hunter2\n", "basic_auth_users.admin", True),
    (
        "bcrypt cost 3",
        "basic_auth_users:\n  admin: '$2b$03$" + "a" * 53 + "'\n",
        "basic_auth_users.admin",
        True,
    ),
    ("user twice", "basic_auth_users:\n  a: {hash}\n  a: {hash}\n", "given twice", True),
    ("users as a list", "basic_auth_users: [a]\n", "basic_auth_users", True),
    (
        "missing cert file",
        "tls_server_config: {{cert_file: /nonexistent/server.crt, key_file: {key}}}\n",
        "tls_server_config.cert_file",
        True,
    ),
    ("missing key_file", "tls_server_config: {{cert_file: {cert}}}\n", "key_file", True),
    (
        "key of another certificate",
        "tls_server_config: {{cert_file: {cert}, key_file: {ca_key}}}\n",
        "tls_server_config.key_file",
        True,
    ),
    (
        "bad client_auth_type",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: RequireCert}}\n",
        "tls_server_config.client_auth_type",
        True,
    ),
    (
        "client CA without client auth",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, client_ca_file: {ca}}}\n",
        "tls_server_config.client_auth_type",
        True,
    ),
    (
        "bad min_version",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, min_version: TLS1.3}}\n",
        "tls_server_config.min_version",
        True,
    ),
    (
        "unknown cipher",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]}}\n",
        "tls_server_config.cipher_suites",
        True,
    ),
    (
        "unknown curve",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, curve_preferences: [X448]}}\n",
        "tls_server_config.curve_preferences",
        True,
    ),
    (
        "header not allowed",
        "http_server_config:\n  headers: {{Server: x}}\n",
        "http_server_config.headers.Server",
        True,
    ),
    (
        "bad header value",
        "http_server_config:\n  headers: {{X-Frame-Options: DENY}}\n",
        "http_server_config.headers.X-Frame-Options",
        True,
    ),
    ("http2 not a boolean", "http_server_config: {{http2: 1}}\n", "http2", True),
    ("not YAML", "tls_server_config: [\n", "invalid YAML", True),
    ("not a mapping", "- a\n", "expected a mapping", True),
    # client_allowed_sans is newer than promtool 2.42, which rejects it as unknown; newer
    # exporter-toolkit rejects it without RequireAndVerifyClientCert/RequireAnyClientCert.
    (
        "SANs without client certificates",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, client_allowed_sans: [a]}}\n",
        "tls_server_config.client_allowed_sans",
        True,
    ),
    # Stricter than promtool (docs/security.md): these never work as written.
    (
        "RequireAnyClientCert",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: RequireAnyClientCert}}\n",
        "tls_server_config.client_auth_type",
        False,
    ),
    (
        "min_version above max_version",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "min_version: TLS13, max_version: TLS12}}\n",
        "tls_server_config.min_version",
        False,
    ),
    (
        "client CA file without a certificate",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: RequireAndVerifyClientCert, client_ca_file: {ca_key}}}\n",
        "tls_server_config.client_ca_file",
        False,
    ),
]


def fill(template: str, certs: Certs) -> str:
    return template.format(
        cert=certs.server.cert,
        key=certs.server.key,
        ca=certs.ca.cert,
        ca_key=certs.ca.key,
        hash=f"'{HASH}'",
    )


@pytest.mark.parametrize(
    ("template", "names", "promtool_rejects"),
    [pytest.param(t, k, p, id=name) for name, t, k, p in BAD_FILES],
)
def test_bad_file_is_one_line_naming_the_key(
    tmp_path: Path, certs: Certs, template: str, names: str, promtool_rejects: bool
) -> None:
    path = write(tmp_path / "web.yml", fill(template, certs))
    with pytest.raises(ConfigError) as caught:
        load_web_config(str(path))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"web config {str(path)!r}: ")
    assert names in message
    assert HASH not in message
    assert "hunter2" not in message
    assert promtool_accepts(path) is not promtool_rejects


# Valid for promtool 2.42 and for us.
GOOD_FILES = [
    ("basic auth only", "basic_auth_users:\n  prometheus: {hash}\n"),
    ("htpasswd $2y$ hash", "basic_auth_users:\n  apache: '" + HASH_2Y + "'\n"),
    ("TLS", "tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n"),
    (
        "mutual TLS",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: RequireAndVerifyClientCert, client_ca_file: {ca}}}\n",
    ),
    (
        "client certificate if given",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: VerifyClientCertIfGiven, client_ca_file: {ca}}}\n",
    ),
    (
        "client certificate requested",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "client_auth_type: RequestClientCert}}\n",
    ),
    (
        "every cipher Go allows",
        "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS10\n"
        "  cipher_suites:\n"
        + "".join(f"  - {name}\n" for name in web_config._CIPHER_SUITES)
        + "".join(f"  - {name}\n" for name in web_config._TLS13_CIPHER_SUITES),
    ),
    (
        "YAML 1.1 booleans",
        "tls_server_config: {{cert_file: {cert}, key_file: {key}, "
        "prefer_server_cipher_suites: no}}\nhttp_server_config: {{http2: Off}}\n",
    ),
    (
        "every header",
        "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
        "    X-Frame-Options: sameorigin\n    X-XSS-Protection: '1; mode=block'\n"
        "    Content-Security-Policy: default-src 'self'\n"
        "    Strict-Transport-Security: max-age=1\n",
    ),
]


@pytest.mark.parametrize("template", [pytest.param(t, id=name) for name, t in GOOD_FILES])
def test_files_promtool_accepts_load(tmp_path: Path, certs: Certs, template: str) -> None:
    path = write(tmp_path / "web.yml", fill(template, certs))
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None


def test_newer_exporter_toolkit_keys(tmp_path: Path, certs: Certs) -> None:
    # Inline PEM, client_allowed_sans and rate_limit came after promtool 2.42's toolkit.
    def block(path: Path) -> str:
        return "|\n" + "".join(f"    {line}\n" for line in path.read_text().splitlines())

    text = (
        f"tls_server_config:\n  cert: {block(certs.server.cert)}  key: {block(certs.server.key)}"
        f"  client_ca: {block(certs.ca.cert)}"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_allowed_sans: [scraper.example, 10.0.0.1]\n"
        "rate_limit:\n  burst: 10\n  interval: 1m30s\n"
    )
    config = load_web_config(str(write(tmp_path / "web.yml", text)))
    assert config is not None
    assert config.tls is not None
    assert config.tls.cert_file == ""
    assert config.tls.client_ca
    assert config.tls.client_allowed_sans == ("scraper.example", "10.0.0.1")
    assert config.rate_limit == RateLimit(burst=10, interval=90.0)
    assert config.create_ssl_context() is not None  # inline PEM loads (memfd, no disk file)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("1s", 1.0), ("1m30s", 90.0), ("1.5h", 5400.0), ("250ms", 0.25),
     ("10us", 1e-5), ("2µs", 2e-6), (".5s", 0.5), ("-1s", -1.0), ("1000000000", 1.0)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1d", "1s2", "1 s", "--1s", "1.2.3s"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_go_duration(text)


def test_token_bucket_refills_one_per_interval() -> None:
    now = [0.0]
    bucket = auth._TokenBucket(RateLimit(burst=2, interval=10.0), clock=lambda: now[0])
    assert [bucket.allow() for _ in range(3)] == [True, True, False]
    now[0] = 9.0
    assert not bucket.allow()
    now[0] = 10.5
    assert bucket.allow()
    assert not bucket.allow()


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Basic " + base64.b64encode(b"u:p:w").decode(), (b"u", b"p:w")),
        ("bAsIc " + base64.b64encode(b"u:").decode(), (b"u", b"")),
        ("Basic " + base64.b64encode(b"no colon").decode(), None),
        ("Basic not-base64!", None),
        ("Bearer abc", None),
        ("", None),
        ("Basic", None),
    ],
)
def test_basic_credentials(header: str, expected: tuple[bytes, bytes] | None) -> None:
    assert auth._basic_credentials(header) == expected


# --------------------------------------------------------------------------- middleware


def make_settings() -> Settings:
    return Settings(
        targets=(build_target(name="main", url="redis://127.0.0.1:1/0"),),
        poll_interval=10.0,
        poll_timeout=8.0,
        listen_host="127.0.0.1",
        listen_port=0,
        telemetry_path="/metrics",
        log_level="info",
        log_format="json",
        collect_processes=True,
    )


def make_app(config: WebConfig) -> web.Application:
    return create_app(
        make_settings(),
        CollectorRegistry(),
        Store(["main"]),
        middlewares=[ServedWebConfig(config, HttpCounters()).middleware()],
    )


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def auth_client(tmp_path: Path) -> AsyncIterator[Client]:
    text = (
        f"basic_auth_users:\n  prometheus: '{HASH}'\n  apache: '{HASH_2Y}'\n"
        "http_server_config:\n  headers: {X-Content-Type-Options: nosniff}\n"
    )
    config = parse_web_config(text, str(tmp_path / "web.yml"))
    client: Client = TestClient(TestServer(make_app(config), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


async def test_right_credentials_pass(auth_client: Client) -> None:
    for path in ("/metrics", "/", "/-/healthy"):
        response = await auth_client.get(path, headers=basic("prometheus", PASSWORD))
        assert response.status == 200, path
    response = await auth_client.get("/metrics", headers=basic("apache", "apache"))
    assert response.status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("prometheus", "wrong"),
        basic("prometheus", ""),
        basic("nobody", PASSWORD),
        basic("Prometheus", PASSWORD),
        {"Authorization": "Basic %%%"},
        {"Authorization": "Bearer " + PASSWORD},
    ],
    ids=["none", "wrong", "empty", "unknown-user", "user-case", "garbage", "bearer"],
)
async def test_wrong_or_missing_credentials_get_401_and_nothing_else(
    auth_client: Client, headers: dict[str, str]
) -> None:
    for path in ALL_PATHS:
        response = await auth_client.get(path, headers=headers)
        assert response.status == 401, path
        assert response.headers.getall("WWW-Authenticate") == ["Basic"]
        assert await response.text() == "Unauthorized\n"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_headers_on_every_response(auth_client: Client) -> None:
    response = await auth_client.get("/no-such-page", headers=basic("prometheus", PASSWORD))
    assert response.status == 404
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_successful_checks_are_cached_failures_are_not(
    auth_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    for _ in range(5):
        assert (
            await auth_client.get("/metrics", headers=basic("prometheus", PASSWORD))
        ).status == 200
    assert len(calls) == 1
    for _ in range(3):
        assert (await auth_client.get("/metrics", headers=basic("prometheus", "x"))).status == 401
    assert len(calls) == 4
    # An unknown user still costs one bcrypt check, against a real user's hash.
    assert (await auth_client.get("/metrics", headers=basic("nobody", "x"))).status == 401
    assert len(calls) == 5
    assert calls[-1] == HASH.encode()


async def test_long_passwords_use_bcrypts_first_72_bytes(tmp_path: Path) -> None:
    password = "p" * 80
    hashed = bcrypt.hashpw(password[:72].encode(), bcrypt.gensalt(4)).decode()
    config = parse_web_config(f"basic_auth_users: {{u: '{hashed}'}}\n", str(tmp_path / "w.yml"))
    async with TestClient(TestServer(make_app(config), host="127.0.0.1")) as client:
        assert (await client.get("/", headers=basic("u", password))).status == 200


async def test_rate_limit(tmp_path: Path) -> None:
    text = "rate_limit: {burst: 2, interval: 1h}\n"
    config = parse_web_config(text, str(tmp_path / "web.yml"))
    async with TestClient(TestServer(make_app(config), host="127.0.0.1")) as client:
        statuses = [(await client.get("/-/healthy")).status for _ in range(3)]
    assert statuses == [200, 200, 429]


# --------------------------------------------------------------------------- TLS in-process


def client_context(
    certs: Certs, pair: CertPair | None = None, max_version: ssl.TLSVersion | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca.cert))
    if pair is not None:
        context.load_cert_chain(str(pair.cert), str(pair.key))
    if max_version is not None:
        context.maximum_version = max_version
    return context


ServeTLS = Callable[[WebConfig], Awaitable[int]]


@pytest.fixture
async def serve_tls() -> AsyncIterator[ServeTLS]:
    """Serve an app with a WebConfig on a real TLS socket; yields `start(config) -> port`."""
    runners: list[web.AppRunner] = []

    async def start(config: WebConfig) -> int:
        runner = web.AppRunner(make_app(config))
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=config.create_ssl_context())
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    yield start
    for runner in runners:
        await runner.cleanup()


async def tls_get(port: int, path: str, context: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"https://127.0.0.1:{port}{path}", ssl=context) as response,
    ):
        return response.status


async def test_client_allowed_sans(tmp_path: Path, certs: Certs, serve_tls: ServeTLS) -> None:
    text = mtls_yaml(certs, "  client_allowed_sans: [scraper.example, 10.0.0.1]\n")
    config = parse_web_config(text, str(tmp_path / "web.yml"))
    port = await serve_tls(config)
    assert await tls_get(port, "/metrics", client_context(certs, certs.scraper)) == 200
    # Signed by the CA, but not a listed SAN; the CA's client without any SAN neither.
    assert await tls_get(port, "/metrics", client_context(certs, certs.intruder)) == 403
    assert await tls_get(port, "/-/healthy", client_context(certs, certs.pki.client)) == 403
    with pytest.raises(aiohttp.ClientError):
        await tls_get(port, "/metrics", client_context(certs, certs.rogue))


async def peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()
        await writer.wait_closed()


_MTIME = [time.time_ns()]


def replace_file(source: Path, target: Path) -> None:
    """Rename a copy of `source` over `target`, stamped a second after the previous one
    (as if time passed: file times are only as fine as the kernel's clock tick)."""
    _MTIME[0] += 1_000_000_000
    staged = target.with_suffix(".new")
    shutil.copy(source, staged)
    os.utime(staged, ns=(_MTIME[0], _MTIME[0]))
    os.replace(staged, target)


def der(pair: CertPair) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pair.cert.read_text())


async def test_rotated_certificate_is_served_on_the_next_connection(
    tmp_path: Path, certs: Certs, serve_tls: ServeTLS
) -> None:
    live = CertPair(tmp_path / "tls.crt", tmp_path / "tls.key")
    shutil.copy(certs.server.cert, live.cert)
    shutil.copy(certs.server.key, live.key)
    config = parse_web_config(
        f"tls_server_config: {{cert_file: {live.cert}, key_file: {live.key}}}\n",
        str(tmp_path / "web.yml"),
    )
    port = await serve_tls(config)
    context = client_context(certs)
    assert await peer_certificate(port, context) == der(certs.server)

    # A new pair, written the way cert-manager and kubelet do: rename over the old files.
    replace_file(certs.server2.cert, live.cert)
    replace_file(certs.server2.key, live.key)
    with capture_logs() as logs:
        assert await peer_certificate(port, context) == der(certs.server2)
        assert await peer_certificate(port, context) == der(certs.server2)
    assert [entry["event"] for entry in logs] == ["web_certificate_reloaded"]

    # Half-written (certificate of one pair, key of another): keep serving the last good pair.
    replace_file(certs.server.cert, live.cert)
    with capture_logs() as logs:
        assert await peer_certificate(port, context) == der(certs.server2)
        assert await peer_certificate(port, context) == der(certs.server2)
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("web_certificate_reload_failed", "warning")
    ]
    replace_file(certs.server.key, live.key)
    assert await peer_certificate(port, context) == der(certs.server)


# --------------------------------------------------------------------------- the daemon


def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: sidekiq_up 0


def https_get(
    port: int, path: str, context: ssl.SSLContext, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, str]:
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


def start_daemon(directory: Path, web_yaml: str) -> ListeningExporter:
    path = write(directory / "web.yml", web_yaml)
    assert promtool_accepts(path), "the daemon tests use files promtool accepts"
    return ListeningExporter(closed_redis_url(), args=["--web.config.file", str(path)])


@pytest.fixture(scope="module")
def tls_daemon(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """TLS 1.3 only, basic auth; yields the port."""
    text = tls_yaml(certs, "  min_version: TLS13\n") + (
        f"basic_auth_users:\n  prometheus: '{HASH}'\n  apache: '{HASH_2Y}'\n"
    )
    with start_daemon(tmp_path_factory.mktemp("tls-daemon"), text) as daemon:
        yield daemon.port
        daemon.stop()
        log, events = daemon.log_text(), daemon.log_events()
    # Refused handshakes and 401s are not worth a log line, let alone a traceback.
    assert "Traceback" not in log
    assert PASSWORD not in log
    assert HASH not in log
    assert {e["event"] for e in events if e.get("level") in ("error", "critical")} <= {
        "target_down"  # Redis is down in these tests
    }


@pytest.mark.integration
def test_daemon_right_credentials_get_metrics(tls_daemon: int, certs: Certs) -> None:
    headers = basic("prometheus", PASSWORD)
    status, _, body = https_get(tls_daemon, "/metrics", client_context(certs), headers)
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("sidekiq_up", (("target", "default"),))] == 0  # Redis is down
    assert https_get(tls_daemon, "/", client_context(certs), headers)[0] == 200
    assert https_get(tls_daemon, "/-/healthy", client_context(certs), headers)[0] == 200
    assert https_get(tls_daemon, "/-/ready", client_context(certs), headers)[0] == 503
    # A hash made by `htpasswd -B` ($2y$) works as it does with exporter-toolkit.
    apache = basic("apache", "apache")
    assert https_get(tls_daemon, "/metrics", client_context(certs), apache)[0] == 200


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [{}, basic("prometheus", "wrong"), basic("nobody", PASSWORD)],
    ids=["missing", "wrong-password", "unknown-user"],
)
def test_daemon_wrong_or_missing_credentials_get_401(
    tls_daemon: int, certs: Certs, headers: dict[str, str]
) -> None:
    for path in ALL_PATHS:  # the landing page and the health endpoints too
        status, response_headers, body = https_get(tls_daemon, path, client_context(certs), headers)
        assert (status, body) == (401, "Unauthorized\n"), path
        assert response_headers.get_all("WWW-Authenticate") == ["Basic"]


@pytest.mark.integration
def test_daemon_plain_http_to_the_tls_listener_gets_no_metrics(tls_daemon: int) -> None:
    request = (
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: {basic('prometheus', PASSWORD)['Authorization']}\r\n\r\n".encode()
    )
    received = b""
    with socket.create_connection(("127.0.0.1", tls_daemon), timeout=5) as sock:
        sock.sendall(request)
        try:
            for _ in range(100):  # until the server closes the connection
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/1.1 200" not in received
    assert b"sidekiq_" not in received


@pytest.mark.integration
def test_daemon_enforces_min_version(tls_daemon: int, certs: Certs) -> None:
    headers = basic("prometheus", PASSWORD)
    tls13 = client_context(certs, max_version=ssl.TLSVersion.TLSv1_3)
    assert https_get(tls_daemon, "/-/healthy", tls13, headers)[0] == 200
    tls12 = client_context(certs, max_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises(ssl.SSLError):  # the server ends the handshake: min_version is TLS13
        https_get(tls_daemon, "/-/healthy", tls12, headers)


@pytest.fixture(scope="module")
def mtls_daemon(certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """RequireAndVerifyClientCert with the test CA; yields the port."""
    with start_daemon(tmp_path_factory.mktemp("mtls-daemon"), mtls_yaml(certs)) as daemon:
        yield daemon.port
        daemon.stop()
        log, events = daemon.log_text(), daemon.log_events()
    assert "Traceback" not in log
    assert {e["event"] for e in events if e.get("level") in ("error", "critical")} <= {
        "target_down"
    }


@pytest.mark.integration
def test_daemon_client_certificate_mode(mtls_daemon: int, certs: Certs) -> None:
    status, _, body = https_get(mtls_daemon, "/metrics", client_context(certs, certs.pki.client))
    assert status == 200
    assert "sidekiq_up" in body
    for rejected in (None, certs.rogue):  # no certificate; one from a CA not configured
        with pytest.raises((OSError, http.client.HTTPException)):
            https_get(mtls_daemon, "/metrics", client_context(certs, rejected))


BAD_AT_STARTUP = (
    "unknown top-level key",
    "not a bcrypt hash",
    "missing cert file",
    "key of another certificate",
    "bad client_auth_type",
    "RequireAnyClientCert",
)


@pytest.fixture(scope="module")
def bad_config_runs(
    certs: Certs, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int, str, str]]:
    """Start the daemon once per bad file, all at the same time; (exit code, stdout, stderr)."""
    directory = tmp_path_factory.mktemp("bad-configs")
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    cases = {name: (template, key) for name, template, key, _ in BAD_FILES}
    procs = {}
    for i, name in enumerate(BAD_AT_STARTUP):
        path = write(directory / f"web{i}.yml", fill(cases[name][0], certs))
        procs[name] = subprocess.Popen(
            [python, "-m", "exporter", "--redis.url", closed_redis_url(),
             "--web.listen-address", f"127.0.0.1:{free_port()}", "--web.config.file", str(path)],
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    runs = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=30)
            runs[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    return runs


@pytest.mark.integration
@pytest.mark.parametrize("name", BAD_AT_STARTUP)
def test_daemon_exits_2_with_one_line_on_a_bad_file(
    bad_config_runs: dict[str, tuple[int, str, str]], name: str
) -> None:
    key = {case: key for case, _, key, _ in BAD_FILES}[name]
    code, stdout, stderr = bad_config_runs[name]
    assert code == 2, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("sidekiq-exporter: error: web config ")
    assert key in lines[0]


async def test_serve_refuses_a_bad_file_itself(tmp_path: Path) -> None:
    # main() validates first; serve() called directly must not start without the file either.
    path = write(tmp_path / "web.yml", "basic_auth_users: {admin: hunter2}\n")
    settings = replace(make_settings(), web_config_file=str(path))
    with pytest.raises(cli.StartupError, match=r"basic_auth_users\.admin"):
        await cli.serve(settings, build=lambda *_: [], stop=asyncio.Event())


def test_the_documented_example_works(tmp_path: Path, certs: Certs) -> None:
    doc = (REPO_ROOT / "docs" / "security.md").read_text()
    section = doc[doc.index("## HTTP (/metrics)") :]
    example = section[section.index("```yaml\n") + 8 :]
    example = example[: example.index("```")]
    (tmp_path / "tls").mkdir()
    shutil.copy(certs.server.cert, tmp_path / "tls" / "tls.crt")
    shutil.copy(certs.server.key, tmp_path / "tls" / "tls.key")
    path = write(tmp_path / "web.yml", example)
    assert promtool_accepts(path)
    config = load_web_config(str(path))
    assert config is not None
    assert config.tls is not None
    assert set(config.basic_auth_users) == {"prometheus"}
