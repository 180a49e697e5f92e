"""TLS for the HTTP server: the listening socket's context from a validated `TLSServerConfig`,
and a renewed certificate/key pair served from the next handshake. Knows nothing of the web
config file's format or of HTTP.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from exporter import config_file
from exporter.config_file import ConfigError
from exporter.logs import WEB_CERTIFICATE_RELOAD_FAILED, WEB_CERTIFICATE_RELOADED, get_logger

log = get_logger(__name__)

# client_auth_type -> what the server asks of clients. Go's RequestClientCert asks for a
# certificate and then ignores it; not asking at all has the same effect on who gets in.
CLIENT_AUTH: Final = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    """`tls_server_config`, validated; file paths are absolute or relative to the cwd."""

    cert_file: str  # "" when the certificate is inline (`cert`)
    key_file: str  # "" when the key is inline (`key`)
    cert: str = field(default="", repr=False)
    key: str = field(default="", repr=False)
    client_auth_type: str = "NoClientCert"
    # The client CAs in PEM, read once at startup (from `client_ca_file` or `client_ca`).
    client_ca: str = field(default="", repr=False)
    client_allowed_sans: tuple[str, ...] | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3
    openssl_ciphers: tuple[str, ...] = ()  # empty: OpenSSL's defaults
    prefer_server_cipher_suites: bool = True
    openssl_curves: tuple[str, ...] = ()

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return CLIENT_AUTH[self.client_auth_type]


def create_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """The listening socket's TLS context for `tls`, with the certificate and key loaded now.

    When the certificate and key are files, every handshake checks whether they changed
    (a `stat` of each) and serves the new pair once both load; until then the old one.
    """
    context = _new_ssl_context(tls)
    if tls.cert_file or tls.key_file:
        context.sni_callback = _CertificateReloader(tls, context)
    return context


def _new_ssl_context(tls: TLSServerConfig) -> ssl.SSLContext:
    """A server context for `tls`, with the certificate and key loaded now."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():  # TLS10/TLS11 are deprecated, but the file asks for them
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = tls.min_version
        context.maximum_version = tls.max_version
    if tls.openssl_ciphers:
        context.set_ciphers(":".join(tls.openssl_ciphers))
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.openssl_curves:
        # Python's ssl can set one group, not a preference list: the most preferred one.
        context.set_ecdh_curve(tls.openssl_curves[0])
    context.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
    _load_key_pair(context, tls)
    context.verify_mode = tls.verify_mode
    if tls.verify_mode != ssl.CERT_NONE:
        if tls.client_ca:
            context.load_verify_locations(cadata=tls.client_ca)
        else:
            # Go verifies against the system roots when no client CA is given.
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return context


def _load_key_pair(context: ssl.SSLContext, tls: TLSServerConfig) -> None:
    where = "tls_server_config."
    cert_where = where + ("cert_file" if tls.cert_file else "cert")
    key_where = where + ("key_file" if tls.key_file else "key")
    cert_text = _file_or_inline(tls.cert_file, tls.cert, cert_where)
    key_text = _file_or_inline(tls.key_file, tls.key, key_where)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise ConfigError(f"{cert_where}: no PEM certificate in it")
    if "ENCRYPTED" in key_text:
        raise ConfigError(f"{key_where}: encrypted private keys are not supported")
    if "PRIVATE KEY-----" not in key_text:
        raise ConfigError(f"{key_where}: no PEM private key in it")
    with _pem_path(tls.cert_file, cert_text) as cert, _pem_path(tls.key_file, key_text) as key:
        try:
            context.load_cert_chain(cert, key, password=_no_password)
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                raise ConfigError(
                    f"{key_where}: the key does not belong to the certificate"
                ) from None
            raise ConfigError(
                f"{cert_where}: cannot load the certificate and key: {exc.reason or exc}"
            ) from None


def _file_or_inline(path: str, inline: str, where: str) -> str:
    return config_file.read_text(path, where=where) if path else inline


def _no_password() -> bytes:
    raise ConfigError("tls_server_config.key_file: encrypted private keys are not supported")


@contextlib.contextmanager
def _pem_path(path: str, text: str) -> Iterator[str]:
    """A file name for `text`: `path` itself, or (inline PEM) a file only this process sees."""
    if path:
        yield path
        return
    if hasattr(os, "memfd_create"):  # Linux: no file on disk, works on a read-only root
        fd = os.memfd_create("web-config-pem", os.MFD_CLOEXEC)
        try:
            os.write(fd, text.encode())
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as file:  # created 0600
        file.write(text)
        file.flush()
        yield file.name


class _CertificateReloader:
    """The listening context's SNI callback: serve the newest certificate/key pair.

    It runs at every handshake, before the certificate is sent. When the files' stat changed
    it builds a new context from them; if they don't load (a pair caught half-written) the
    previous pair stays in use and the same files are not retried until they change again.
    """

    def __init__(self, tls: TLSServerConfig, context: ssl.SSLContext) -> None:
        self._tls = tls
        self._paths = tuple(p for p in (tls.cert_file, tls.key_file) if p)
        self._context = context
        self._stamp = self._stat()
        self._failed: object = None

    def _stat(self) -> object:
        try:
            stats = [os.stat(path) for path in self._paths]
        except OSError:
            return None
        return tuple((s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def __call__(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _server_name: str | None, _: object
    ) -> None:
        try:
            stamp = self._stat()
            if stamp is not None and stamp != self._stamp and stamp != self._failed:
                self._reload(stamp)
            if connection.context is not self._context:
                connection.context = self._context
        except Exception:  # never fail a handshake over this; the old pair still works
            log.exception(WEB_CERTIFICATE_RELOAD_FAILED, cert_file=self._tls.cert_file)

    def _reload(self, stamp: object) -> None:
        try:
            fresh = _new_ssl_context(self._tls)
        except (ConfigError, ssl.SSLError, OSError) as exc:
            self._failed = stamp
            log.warning(
                WEB_CERTIFICATE_RELOAD_FAILED, cert_file=self._tls.cert_file, error=str(exc)
            )
            return
        self._context, self._stamp, self._failed = fresh, stamp, None
        log.info(WEB_CERTIFICATE_RELOADED, cert_file=self._tls.cert_file)
