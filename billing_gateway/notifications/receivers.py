"""One webhook POST to a customer's receiver, safe against server-side request forgery.

A receiver URL is chosen by a customer, so without care a webhook could be made to call
this deployment's own network: the database, an admin port, the cloud metadata service
(169.254.169.254). Two checks stop that (the spec's "Server side request forgery" section,
github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md):

1. `check_receiver_url`, when the URL is saved and before each attempt: every address the
   host resolves to must be a public one.
2. At connect time, the address the socket is actually connected to is checked again. DNS
   can answer differently between the two lookups ("DNS rebinding": a public address for
   the check, 127.0.0.1 for the connection), so the first check alone proves nothing.

Every attempt has a total deadline as well as connect and read timeouts: a receiver that
drips one byte at a time would otherwise hold a worker for as long as it likes.
"""

from __future__ import annotations

import contextvars
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

MAX_URL_LENGTH = 2048
# Enough of an answer to show a customer why their receiver failed; more is never read.
MAX_ANSWER_BYTES = 64 * 1024
_READ_CHUNK = 8192
USER_AGENT = "billing-gateway-webhooks/1"
_FALLBACK_TIMEOUT = 15.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Address ranges ipaddress does not flag everywhere we need: the CGNAT block is neither
# private nor global to it, and NAT64's well-known prefix carries an IPv4 address inside.
_SHARED_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")


class ReceiverRefused(ValueError):
    """A receiver URL this service will not call, with a message for the customer."""


class DeliveryFailed(Exception):
    """A webhook attempt that got no HTTP answer (network, TLS, timeout); the message is short."""


@dataclass(frozen=True)
class Answer:
    """The receiver's HTTP answer to one attempt (any status: 2xx is success, the rest not)."""

    status: int
    retry_after: str | None
    elapsed_ms: int
    body_excerpt: str


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4, Teredo), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_refusal(address: IPAddress) -> str | None:
    """Say why webhooks may not go to this address ("a loopback address"), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return address_refusal(inner)
    # The explicit checks give the customer a precise reason; `is_global` catches the rest
    # (documentation ranges, benchmarking, 6to4 relays and whatever Python adds later).
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (this includes cloud metadata services)"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED_CGNAT:
        return "a carrier-grade NAT address"
    if address.is_multicast:
        return "a multicast address"
    # Reserved before private: Python lists 240.0.0.0/4 among both.
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "a site-local address"
    if not address.is_global:
        return "not a public internet address"
    return None


def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to for a TCP connection."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def check_receiver_url(url: str, *, allow_private: bool) -> str:
    """Return the normalized receiver URL, or raise ReceiverRefused saying what is wrong."""
    if len(url) > MAX_URL_LENGTH:
        raise ReceiverRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise ReceiverRefused("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ReceiverRefused("the URL is not valid (check the host and port)") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ReceiverRefused("the URL must start with https:// (or http://)")
    if parts.username is not None or parts.password is not None:
        raise ReceiverRefused("the URL must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise ReceiverRefused("the URL has no host")
    if port == 0:
        raise ReceiverRefused("the URL's port must be between 1 and 65535")
    try:
        # One ASCII spelling, so the name checked here is the name connected to later.
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ReceiverRefused("the URL's host is not a valid name") from exc
    netloc = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if port is not None:
        netloc += f":{port}"
    normalized = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    if allow_private:
        # Loopback and private receivers allowed (tests, a local try-out); link-local never.
        try:
            literal: IPAddress | None = ipaddress.ip_address(ascii_host)
        except ValueError:
            literal = None  # a name: the connect-time check looks at what it resolves to
        reason = never_allowed(literal) if literal is not None else None
        if reason is not None:
            raise ReceiverRefused(f"the host {ascii_host} is {reason}; never allowed")
        return normalized
    default_port = 443 if scheme == "https" else 80
    try:
        addresses = _resolve(ascii_host, port or default_port)
    except (OSError, UnicodeError) as exc:
        raise ReceiverRefused(f"the host {ascii_host} does not resolve to an address") from exc
    if not addresses:
        raise ReceiverRefused(f"the host {ascii_host} does not resolve to an address")
    for address in addresses:
        reason = address_refusal(address)
        if reason is not None:
            raise ReceiverRefused(
                f"the host {ascii_host} resolves to {address}, {reason};"
                " webhooks go only to public internet addresses")
    return normalized


@dataclass
class _Attempt:
    """One delivery attempt's rules and deadline, as the connections below see them."""

    allow_private: bool
    deadline: float
    timeout: float
    # Duplicates of the connected sockets' descriptors: shutting one down ends a read
    # blocked on the connection even after TLS has taken the original socket object over.
    sockets: list[socket.socket] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    expired: bool = False

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def watch(self, sock: socket.socket) -> None:
        """Let the deadline end reads and writes on this connection."""
        with self.lock:
            duplicate = sock.dup()
            self.sockets.append(duplicate)
            if self.expired:
                # Connected just as the deadline passed: cut it now, the watchdog has gone.
                duplicate.shutdown(socket.SHUT_RDWR)

    def expire(self) -> None:
        """Cut every connection of this attempt (the deadline has passed)."""
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the other side or by us: nothing to cut

    def release(self) -> None:
        """Close the duplicate descriptors."""
        with self.lock:
            for sock in self.sockets:
                sock.close()
            self.sockets.clear()


# The attempt in progress in this thread (urllib3 connects in the caller's thread). A
# context variable, because urllib3 builds connections itself and gives us no other way
# to hand them per-call settings.
_current: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "webhook_attempt", default=None)


def _connect(host: str, port: int, socket_options: Any) -> socket.socket:
    """Connect to one of the host's addresses within the attempt's deadline and check the peer."""
    attempt = _current.get()
    if attempt is None:
        # Used outside `post`: the strict rules, with a deadline of one default timeout.
        attempt = _Attempt(allow_private=False, deadline=time.monotonic() + _FALLBACK_TIMEOUT,
                           timeout=_FALLBACK_TIMEOUT)
    try:
        # The one step the deadline cannot cut: getaddrinfo blocks until the system's
        # resolver gives up (its own timeouts, /etc/resolv.conf), and cannot be interrupted.
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise DeliveryFailed("the receiver's host name does not resolve") from exc
    last_error: OSError | None = None
    for family, kind, proto, _, address in infos:
        remaining = attempt.remaining()
        if remaining <= 0:
            break
        sock = socket.socket(family, kind, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            # Each address gets what is left of the deadline, not a fresh connect timeout:
            # a name with many unreachable addresses must not stretch the attempt.
            sock.settimeout(min(attempt.timeout, remaining))
            sock.connect(address)
        except OSError as exc:
            sock.close()
            last_error = exc
            continue
        _check_peer(sock, attempt)
        sock.settimeout(attempt.timeout)
        attempt.watch(sock)
        return sock
    if last_error is None or isinstance(last_error, TimeoutError):
        raise DeliveryFailed(f"could not connect to the receiver within {attempt.timeout:g} s")
    if isinstance(last_error, ConnectionRefusedError):
        raise DeliveryFailed("the receiver refused the connection")
    raise DeliveryFailed(f"could not connect to the receiver ({last_error.strerror or 'error'})")


def never_allowed(address: IPAddress) -> str | None:
    """Why no setting lets webhooks go to this address (link-local: the cloud metadata
    service at 169.254.169.254 hands out credentials), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            return never_allowed(inner)
    if address.is_link_local:
        return "a link-local address (this includes cloud metadata services)"
    return None


def _check_peer(sock: socket.socket, attempt: _Attempt) -> None:
    """Refuse the connection if the address actually connected to is not a public one
    (with BILLING_WEBHOOK_ALLOW_PRIVATE: if it is link-local)."""
    # getpeername, not the address we asked for: it is the one the kernel connected.
    peer = ipaddress.ip_address(sock.getpeername()[0])
    reason = never_allowed(peer) if attempt.allow_private else address_refusal(peer)
    if reason is not None:
        # Nothing has been sent yet: the connection ends before the first byte of the request.
        sock.close()
        raise ReceiverRefused(
            f"the receiver's address {peer} is {reason}; webhooks go only to public"
            " internet addresses")


class _CheckedHTTPConnection(HTTPConnection):
    """urllib3's HTTP connection, connected by `_connect`."""

    def _new_conn(self) -> socket.socket:
        return _connect(self._dns_host, self.port, self.socket_options)


class _CheckedHTTPSConnection(HTTPSConnection):
    """urllib3's HTTPS connection, connected by `_connect`; TLS and its checks of the
    certificate and host name are urllib3's, unchanged (they run on the socket returned)."""

    def _new_conn(self) -> socket.socket:
        return _connect(self._dns_host, self.port, self.socket_options)


class _CheckedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedAdapter(HTTPAdapter):
    """A requests adapter whose every connection goes through `_connect`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPPool, "https": _CheckedHTTPSPool}


def _session() -> requests.Session:
    """A session for one attempt: every connection checked, nothing taken from the environment."""
    session = requests.Session()
    # No HTTP(S)_PROXY (the peer would be the proxy, so the check above would check the
    # wrong address) and no ~/.netrc credentials sent to a customer's server.
    session.trust_env = False
    adapter = _CheckedAdapter(max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


@contextmanager
def _attempt(allow_private: bool, timeout: float) -> Iterator[_Attempt]:
    """Run one attempt under its deadline: at the deadline, its connections are cut."""
    attempt = _Attempt(allow_private, time.monotonic() + timeout, timeout)
    watchdog = threading.Timer(timeout, attempt.expire)
    watchdog.daemon = True
    token = _current.set(attempt)
    watchdog.start()
    try:
        yield attempt
    finally:
        watchdog.cancel()
        _current.reset(token)
        attempt.release()


def _read_excerpt(response: requests.Response) -> bytes:
    """Read at most MAX_ANSWER_BYTES of the body, as sent (not decompressed)."""
    raw = response.raw
    data = bytearray()
    while len(data) < MAX_ANSWER_BYTES:
        chunk = raw.read(min(_READ_CHUNK, MAX_ANSWER_BYTES - len(data)), decode_content=False)
        if not chunk:
            break
        data += chunk
    return bytes(data)


def _tls_reason(exc: BaseException) -> str:
    """The certificate problem behind a TLS failure ("certificate verify failed: ..."), short."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen.verify_message or "certificate verify failed"
        if isinstance(seen, ssl.SSLError):
            return seen.reason or "handshake failed"
        seen = seen.__cause__ or seen.__context__ or next(
            (arg for arg in getattr(seen, "args", ()) if isinstance(arg, BaseException)), None)
    return "handshake failed"


def _deliver(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
             allow_private: bool, ca_bundle: str | None = None) -> Answer:
    """POST without the URL check: only the connect-time check guards the address.

    `post` is the entry point; this exists so tests can reach the connect-time check on its
    own (a real rebinding needs a public name that later resolves to a private address),
    and trust their own certificate authority (`ca_bundle`; None: the usual bundle).
    """
    started = time.monotonic()
    sent_headers = {"User-Agent": USER_AGENT, "Accept": "*/*",
                    # The excerpt is read as sent: a compressed answer would be unreadable,
                    # and decompressing could turn 64 KiB into gigabytes.
                    "Accept-Encoding": "identity", **headers}
    with _attempt(allow_private, timeout) as attempt, _session() as session:
        try:
            response = session.post(url, data=body, headers=sent_headers,
                                    timeout=(timeout, timeout), allow_redirects=False,
                                    stream=True, verify=ca_bundle or True)
            with response:
                excerpt = _read_excerpt(response)
        except (ReceiverRefused, DeliveryFailed):
            raise
        except requests.exceptions.SSLError as exc:
            if attempt.expired:
                raise DeliveryFailed(f"no answer within {timeout:g} s") from None
            raise DeliveryFailed(f"TLS with the receiver failed: {_tls_reason(exc)}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException,
                OSError) as exc:
            if attempt.expired or isinstance(exc, requests.Timeout | TimeoutError
                                             | urllib3.exceptions.TimeoutError):
                raise DeliveryFailed(f"no answer within {timeout:g} s") from None
            raise DeliveryFailed("the receiver closed the connection or sent an invalid"
                                 " answer") from None
        if attempt.expired:
            # The deadline cut the answer short; a body without a length ends quietly
            # when cut, so this is the only sign of it.
            raise DeliveryFailed(f"no answer within {timeout:g} s")
    return Answer(
        status=response.status_code,
        retry_after=response.headers.get("Retry-After"),
        elapsed_ms=round((time.monotonic() - started) * 1000),
        body_excerpt=excerpt.decode("utf-8", errors="replace"),
    )


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         allow_private: bool) -> Answer:
    """POST one webhook; return the receiver's answer, whatever its status.

    Redirects are not followed (a 3xx is an answer like any non-2xx). `timeout` is the
    connect timeout, the read timeout and the deadline of the whole attempt. Raises
    ReceiverRefused for an address webhooks may not go to (unless `allow_private`, for
    development and tests) and DeliveryFailed when no answer came.
    """
    checked = check_receiver_url(url, allow_private=allow_private)
    return _deliver(checked, body, headers, timeout=timeout, allow_private=allow_private)
