"""Fixtures: a real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, and a
throwaway certificate authority for the TLS servers of tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class ReceivedMail:
    """One message as the server received it: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class LocalSmtpServer:
    """What a running test SMTP server has received, and how to reach it."""

    host: str
    port: int
    messages: list[ReceivedMail] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    # Recipients the server answers "550 no such user" for.
    unknown_recipients: set[str] = field(default_factory=set)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def wait_for(self, count: int, timeout: float = 5) -> list[ReceivedMail]:
        """Wait until `count` messages have arrived (failing the test after `timeout` s)."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.messages) >= count, timeout):
                pytest.fail(f"{len(self.messages)} of {count} emails arrived in {timeout} s")
            return list(self.messages)


class _Collector:
    """The aiosmtpd handler: keeps every message and accepts it."""

    def __init__(self, server: LocalSmtpServer) -> None:
        self.server = server

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.server.unknown_recipients:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.server.arrived:
            self.server.messages.append(
                ReceivedMail(envelope.mail_from or "", list(envelope.rcpt_tos), parsed))
            self.server.arrived.notify_all()
        return "250 Message accepted for delivery"


class _FreePortController(Controller):
    """aiosmtpd's Controller bound to port 0: it learns the port the kernel chose before
    its own first connection (which it makes to self.port), so no port is guessed."""

    def _trigger_server(self) -> None:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def running_smtp_server(*, starttls: ssl.SSLContext | None = None,
                        implicit_tls: ssl.SSLContext | None = None,
                        credentials: tuple[str, str] | None = None) -> Iterator[LocalSmtpServer]:
    """Run an SMTP server on 127.0.0.1 (a free port): plain, offering STARTTLS, or TLS from
    the first byte; with `credentials`, it requires that login (over TLS only)."""
    server = LocalSmtpServer("127.0.0.1", 0)
    options: dict[str, Any] = {}
    if starttls is not None:
        options["tls_context"] = starttls
    if credentials is not None:

        def authenticate(smtp: SMTP, session: Session, envelope: Envelope, mechanism: str,
                         auth_data: Any) -> AuthResult:
            assert isinstance(auth_data, LoginPassword)
            login = (auth_data.login.decode(), auth_data.password.decode())
            server.logins.append(login)
            # handled=False: aiosmtpd answers (235 or 535) itself.
            return AuthResult(success=login == credentials, handled=False)

        # aiosmtpd sees TLS only when it came by STARTTLS: with implicit TLS it would never
        # offer AUTH if AUTH needed TLS. Requiring AUTH without requiring TLS makes it warn
        # (an error here), so with implicit TLS a login is offered, checked, not required.
        tls_seen_by_server = implicit_tls is None
        options.update(authenticator=authenticate, auth_require_tls=tls_seen_by_server,
                       auth_required=tls_seen_by_server)
    controller = _FreePortController(_Collector(server), hostname="127.0.0.1", port=0,
                                     ssl_context=implicit_tls, **options)
    controller.start()
    server.port = controller.port
    try:
        yield server
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[LocalSmtpServer]:
    """A plain SMTP server on 127.0.0.1 for one test; `smtp_server.url` reaches it."""
    with running_smtp_server() as server:
        yield server


@dataclass(frozen=True)
class TestCertificates:
    """A throwaway certificate authority and a server certificate it signed."""

    __test__ = False  # not a test class, whatever its name

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        """The TLS settings of a server presenting the certificate."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client's default TLS settings (host name checked), trusting only this CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def make_certificates(folder: Path, dns_names: tuple[str, ...] = ("localhost",)
                      ) -> TestCertificates:
    """Write a CA and a server certificate for `dns_names` only (no IP address) to `folder`."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "billing-gateway test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=True, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns_names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = TestCertificates(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    paths.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return paths
