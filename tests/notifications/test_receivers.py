"""One webhook POST: delivered to a real local receiver, refused for every internal address
(before connecting and at connect time), never redirected, bounded in time and size."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from billing_gateway.notifications import receivers
from billing_gateway.notifications.receivers import (
    MAX_ANSWER_BYTES,
    Answer,
    DeliveryFailed,
    ReceiverRefused,
    address_refusal,
    check_receiver_url,
    post,
)
from tests.plugins.smtp import TestCertificates, make_certificates

BODY = b'{"type":"balance.low","data":{"balance":"4.50"}}'
HEADERS = {"webhook-id": "evt_1", "webhook-timestamp": "1790000000",
           "webhook-signature": "v1,c2lnbmF0dXJl", "Content-Type": "application/json"}
# A public address that needs no DNS to "resolve" (getaddrinfo parses literals itself).
PUBLIC_V4 = "93.184.215.14"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class QuietServer(ThreadingHTTPServer):
    """A threaded server whose threads never outlive a test and whose errors stay quiet
    (clients hanging up mid-answer is what several tests do on purpose)."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore: the test's assertions say what went wrong."""


class Receiver:
    """A webhook receiver on 127.0.0.1 (port 0: the kernel picks a free one), in a thread."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.stop = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Keep the test output clean."""

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.requests.append(Received(self.path, dict(self.headers), body))
                try:
                    outer.answer(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client hung up on purpose (size or time limit)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        if h.path == "/ok":
            self.reply(h, 200, b"thanks")
        elif h.path == "/busy":
            self.reply(h, 503, b"busy, try later", {"Retry-After": "120"})
        elif h.path == "/redirect":
            self.reply(h, 302, b"", {"Location": self.url("/ok")})
        elif h.path == "/slow":
            self.stop.wait(5)
            self.reply(h, 200, b"late")
        elif h.path == "/drip-headers":
            h.send_response(200)
            h.flush_headers()  # the status line now; send_response only buffers it
            for n in range(25):  # 5 s of headers, each well inside the read timeout
                h.wfile.write(f"X-Drip-{n}: 1\r\n".encode())
                h.wfile.flush()
                if self.stop.wait(0.2):
                    return
            h.end_headers()
        elif h.path == "/drip-body":
            h.send_response(200)
            h.send_header("Content-Length", "25")
            h.end_headers()
            for _ in range(25):
                h.wfile.write(b"x")
                h.wfile.flush()
                if self.stop.wait(0.2):
                    return
        elif h.path == "/huge":
            self.reply(h, 200, b"x" * (1024 * 1024))
        elif h.path == "/huge-no-length":
            h.send_response(200)
            h.send_header("Connection", "close")
            h.end_headers()
            for _ in range(64):
                h.wfile.write(b"y" * 16384)
        else:
            self.reply(h, 404, b"no such hook")

    @staticmethod
    def reply(h: BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    served = Receiver()
    yield served
    served.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A certificate authority and a server certificate it signed for "localhost" only."""
    return make_certificates(tmp_path_factory.mktemp("tls"), ("localhost",))


@pytest.fixture
def tls_receiver(certificates: TestCertificates) -> Iterator[Receiver]:
    served = Receiver(tls=certificates.server_context())
    yield served
    served.close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- delivery ----

def test_delivers_the_exact_body_and_headers(receiver: Receiver) -> None:
    answer = post(receiver.url("/ok"), BODY, HEADERS, timeout=5, allow_private=True)
    assert (answer.status, answer.retry_after, answer.body_excerpt) == (200, None, "thanks")
    [got] = receiver.requests
    assert got.body == BODY
    assert {k.lower(): v for k, v in got.headers.items()}.items() >= {
        k.lower(): v for k, v in HEADERS.items()}.items()


def test_answer_carries_status_retry_after_and_excerpt(receiver: Receiver) -> None:
    answer = post(receiver.url("/busy"), BODY, HEADERS, timeout=5, allow_private=True)
    assert isinstance(answer, Answer)
    assert (answer.status, answer.retry_after, answer.body_excerpt) == (
        503, "120", "busy, try later")
    assert 0 <= answer.elapsed_ms < 5000


def test_redirect_is_an_answer_not_followed(receiver: Receiver) -> None:
    answer = post(receiver.url("/redirect"), BODY, HEADERS, timeout=5, allow_private=True)
    assert answer.status == 302
    assert [r.path for r in receiver.requests] == ["/redirect"]


@pytest.mark.parametrize("path", ["/huge", "/huge-no-length"])
def test_huge_answer_is_cut_at_64_kib(receiver: Receiver, path: str) -> None:
    answer = post(receiver.url(path), BODY, HEADERS, timeout=5, allow_private=True)
    assert answer.status == 200
    assert len(answer.body_excerpt) == MAX_ANSWER_BYTES == 65536


# ---- time ----

@pytest.mark.parametrize("path", ["/slow", "/drip-headers", "/drip-body"])
def test_slow_or_dripping_receiver_fails_within_the_deadline(receiver: Receiver,
                                                             path: str) -> None:
    # /drip-* never leave the socket idle for a whole read timeout: only the total
    # deadline ends them before their 5 s.
    started = time.monotonic()
    with pytest.raises(DeliveryFailed, match=r"no answer within 1 s"):
        post(receiver.url(path), BODY, HEADERS, timeout=1, allow_private=True)
    assert time.monotonic() - started < 2


def test_nothing_listening_fails_quickly_with_a_short_message() -> None:
    url = f"http://127.0.0.1:{closed_port()}/hook?token=s3cret-in-query"
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as failed:
        post(url, BODY, HEADERS, timeout=5, allow_private=True)
    assert time.monotonic() - started < 1
    assert str(failed.value) == "the receiver refused the connection"


def test_unresolvable_host_fails_without_private_addresses_allowed() -> None:
    with pytest.raises(DeliveryFailed, match="does not resolve"):
        post("http://no-such-host.invalid/hook", BODY, HEADERS, timeout=5, allow_private=True)


# ---- TLS through the checked connections ----

def test_tls_delivers_when_the_certificate_names_the_host(tls_receiver: Receiver,
                                                          certificates: TestCertificates) -> None:
    answer = receivers._deliver(tls_receiver.url("/ok", host="localhost", scheme="https"),
                                BODY, HEADERS, timeout=5, allow_private=True,
                                ca_bundle=str(certificates.ca_file))
    assert answer.status == 200


def test_tls_refuses_a_certificate_for_another_host(tls_receiver: Receiver,
                                                    certificates: TestCertificates) -> None:
    # The certificate names "localhost" only: hostname verification is still urllib3's.
    with pytest.raises(DeliveryFailed, match=r"TLS .*(mismatch|not valid for)"):
        receivers._deliver(tls_receiver.url("/ok", scheme="https"), BODY, HEADERS, timeout=5,
                           allow_private=True, ca_bundle=str(certificates.ca_file))
    assert tls_receiver.requests == []


def test_tls_refuses_an_unknown_authority(tls_receiver: Receiver) -> None:
    with pytest.raises(DeliveryFailed, match=r"TLS .*certificate"):
        post(tls_receiver.url("/ok", host="localhost", scheme="https"), BODY, HEADERS,
             timeout=5, allow_private=True)
    assert tls_receiver.requests == []


# ---- the URL check ----

@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/hook", "https://"),
    ("javascript:alert(1)", "https://"),
    ("example.com/hook", "https://"),
    ("", "https://"),
    ("http:///hook", "no host"),
    ("https://user:pass@example.com/hook", "user name or password"),
    ("https://token@example.com/hook", "user name or password"),
    ("https://example.com:0/hook", "port"),
    ("https://example.com:99999/hook", "not valid"),
    ("https://exa mple.com/hook", "spaces or control"),
    ("https://example.com/hook\r\nX-Injected: 1", "spaces or control"),
    ("https://example.com/" + "a" * 2048, "longer than 2048"),
])
def test_bad_urls_are_refused(url: str, message: str) -> None:
    for allow_private in (True, False):
        with pytest.raises(ReceiverRefused, match=message):
            check_receiver_url(url, allow_private=allow_private)


@pytest.mark.parametrize(("url", "normalized"), [
    (f"HTTPS://{PUBLIC_V4}", f"https://{PUBLIC_V4}/"),
    (f"https://{PUBLIC_V4}:8443/hooks/sms?v=2#frag", f"https://{PUBLIC_V4}:8443/hooks/sms?v=2"),
    ("https://[2606:4700:4700::1111]/h", "https://[2606:4700:4700::1111]/h"),
])
def test_public_addresses_pass_normalized(url: str, normalized: str) -> None:
    assert check_receiver_url(url, allow_private=False) == normalized


def test_private_address_is_allowed_when_asked() -> None:
    assert check_receiver_url("http://10.0.0.1:8080/h", allow_private=True) \
        == "http://10.0.0.1:8080/h"


@pytest.mark.parametrize(("host", "reason"), [
    ("127.0.0.1", "loopback"),
    ("127.1", "loopback"),
    ("2130706433", "loopback"),          # 127.0.0.1 as one decimal number
    ("localhost", "loopback"),           # a name resolving to loopback
    ("[::1]", "loopback"),
    ("10.0.0.1", "private"),
    ("172.16.5.4", "private"),
    ("192.168.1.1", "private"),
    ("[fd00::1]", "private"),
    ("169.254.169.254", "link-local"),   # the cloud metadata service
    ("[fe80::1]", "link-local"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),  # noqa: S104  # the address refused, not bound
    ("[::]", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("[ff02::1]", "multicast"),
    ("240.0.0.1", "reserved"),
    ("192.0.2.10", "private"),           # documentation (TEST-NET-1): private to Python
    ("198.18.0.1", "private"),           # benchmarking
    ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped IPv6
    ("[::ffff:169.254.169.254]", "link-local"),
    ("[64:ff9b::a00:1]", "private"),     # NAT64 of 10.0.0.1
    ("[2002:7f00:1::]", "loopback"),     # 6to4 of 127.0.0.1
])
def test_internal_addresses_are_refused(host: str, reason: str) -> None:
    with pytest.raises(ReceiverRefused, match=reason):
        check_receiver_url(f"https://{host}/hook", allow_private=False)


def test_unresolvable_host_is_refused_with_a_message() -> None:
    with pytest.raises(ReceiverRefused, match=r"no-such-host\.invalid does not resolve"):
        check_receiver_url("https://no-such-host.invalid/hook", allow_private=False)


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_have_no_refusal(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_post_refuses_loopback_before_sending(receiver: Receiver, host: str) -> None:
    with pytest.raises(ReceiverRefused):
        post(receiver.url("/ok", host=host), BODY, HEADERS, timeout=5, allow_private=False)
    assert receiver.requests == []


# ---- the connect-time check ----

@pytest.mark.parametrize("scheme", ["http", "https"])
def test_connect_time_check_refuses_a_loopback_peer(receiver: Receiver, scheme: str) -> None:
    # _deliver skips check_receiver_url, so only the check of the connected socket stands
    # between this URL and the receiver (for https, before any TLS byte).
    with pytest.raises(ReceiverRefused, match=r"receiver's address 127\.0\.0\.1 is a loopback"):
        receivers._deliver(receiver.url("/ok", scheme=scheme), BODY, HEADERS, timeout=5,
                           allow_private=False)
    assert receiver.requests == []


def test_dns_rebinding_is_refused_at_connect_time(receiver: Receiver,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A resolver that rebinds, as an attacker's DNS server does: a public address for the
    # URL check, then 127.0.0.1 for the connection. Only this one name is faked.
    real_getaddrinfo = socket.getaddrinfo
    answers = iter([PUBLIC_V4])

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.example":
            address = next(answers, "127.0.0.1")
            return real_getaddrinfo(address, port, *args, **kwargs)
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    url = receiver.url("/ok", host="rebind.example")
    assert check_receiver_url(url, allow_private=False) == url  # (this consumed the public answer)
    answers = iter([PUBLIC_V4])
    with pytest.raises(ReceiverRefused, match=r"receiver's address 127\.0\.0\.1"):
        post(url, BODY, HEADERS, timeout=5, allow_private=False)
    assert receiver.requests == []


def test_connect_time_check_refuses_link_local_even_with_private_allowed() -> None:
    """The metadata service's range is never a receiver: checked on the connected peer."""
    attempt = receivers._Attempt(allow_private=True, deadline=time.monotonic() + 5, timeout=5)

    class Peer:
        closed = False

        def getpeername(self) -> tuple[str, int]:
            return ("169.254.169.254", 80)

        def close(self) -> None:
            self.closed = True

    peer = Peer()
    with pytest.raises(receivers.ReceiverRefused, match="link-local"):
        receivers._check_peer(peer, attempt)  # type: ignore[arg-type]  # a socket's two calls
    assert peer.closed
