"""Throw-away certificates for TLS tests, made with the `openssl` command line tool.

`make_pki(directory)` writes a test CA, server certificates signed by it (one valid for
`redis.test` and 127.0.0.1, one for `redis.test` only), a client certificate, and a second CA
that signed nothing the servers use (an untrusted CA). EC P-256 keys: fast to generate.
Nothing here touches the system trust store.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_NAME = "redis.test"
DAYS = "2"


class OpenSSLNotInstalledError(RuntimeError):
    """The `openssl` command is not on PATH."""


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: CertPair
    server: CertPair  # SAN: DNS:redis.test, IP:127.0.0.1
    server_dns_only: CertPair  # SAN: DNS:redis.test
    client: CertPair  # extendedKeyUsage clientAuth, CN=sidekiq-exporter
    other_ca: CertPair  # a CA nobody here trusts


def _openssl(*args: str) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise OpenSSLNotInstalledError("openssl is not installed (apt-get install openssl)")
    result = subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def _key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )


def _ca(directory: Path, name: str, subject: str) -> CertPair:
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    _key(pair.key)
    _openssl(
        "req", "-x509", "-new", "-key", str(pair.key), "-out", str(pair.cert),
        "-days", DAYS, "-subj", f"/CN={subject}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def _leaf(directory: Path, name: str, ca: CertPair, subject: str, extensions: str) -> CertPair:
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    _key(pair.key)
    csr = directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", "-new", "-key", str(pair.key), "-out", str(csr), "-subj", f"/CN={subject}")
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(pair.cert), "-days", DAYS, "-extfile", str(ext),
    )  # fmt: skip
    return pair


def make_pki(directory: Path) -> Pki:
    """Write the CA, server, client and untrusted-CA files into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca", "sidekiq-exporter test CA")
    server_ext = (
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    return Pki(
        ca=ca,
        server=_leaf(
            directory,
            "server",
            ca,
            SERVER_NAME,
            server_ext + f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\n",
        ),
        server_dns_only=_leaf(
            directory,
            "server-dns",
            ca,
            SERVER_NAME,
            server_ext + f"subjectAltName=DNS:{SERVER_NAME}\n",
        ),
        client=_leaf(
            directory,
            "client",
            ca,
            "sidekiq-exporter",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n",
        ),
        other_ca=_ca(directory, "other-ca", "untrusted test CA"),
    )


def redis_tls_args(pki: Pki, tls_port: int, *, server: CertPair, auth_clients: bool) -> list[str]:
    """`redis-server` options for a TLS port next to the plain one (kept for admin helpers)."""
    return [
        "--tls-port", str(tls_port),
        "--tls-cert-file", str(server.cert),
        "--tls-key-file", str(server.key),
        "--tls-ca-cert-file", str(pki.ca.cert),
        "--tls-auth-clients", "yes" if auth_clients else "no",
    ]  # fmt: skip
