"""Billing alert emails (low balance, top-ups, automatic top-ups) sent through SMTP.

An event is the dict the outbox holds: {"id", "type", "createdAt", "data"}, where data
carries the org ("orgId") and, as the type needs them, "balance", "threshold", "amount"
(decimal strings, at most 4 places), "currency" (default "usd") and "reason" (why an
automatic top-up failed). A malformed event raises ValueError (resending cannot fix it);
anything the SMTP server or the network does raises EmailFailed (a later try may work).
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

from billing_gateway.platform.money import AmountError, format_display, parse_decimal_text

DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
# Event ids go into the Message-ID: only characters a msg-id may hold unquoted (RFC 5322).
_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_MAX_REASON = 200


class EmailFailed(Exception):
    """An alert email the SMTP server did not accept (or could not be reached for); short."""


@dataclass(frozen=True)
class _Text:
    subject: str  # formatted with the event's shown amounts
    headline: str
    advice: str
    required: tuple[str, ...]


_TEXTS: dict[str, _Text] = {
    "balance.low": _Text(
        "Your SMS credit balance is low: {balance}",
        "Your SMS credit balance has fallen below your alert threshold.",
        "Add funds now to keep your messages sending: once the balance reaches zero, new"
        " messages cannot be sent.",
        ("balance",)),
    "balance.depleted": _Text(
        "Your SMS credit is used up: {balance}",
        "Your SMS credit balance has run out.",
        "New messages cannot be sent until you add funds. Add funds on your billing page to"
        " resume sending.",
        ("balance",)),
    "balance.recovered": _Text(
        "Your SMS credit balance is back to {balance}",
        "Your SMS credit balance is above your alert threshold again.",
        "Nothing to do: your messages are sending normally.",
        ("balance",)),
    "topup.succeeded": _Text(
        "Funds added to your SMS credit: {amount}",
        "Your payment went through and its funds were added to your SMS credit.",
        "Nothing to do. Keep this email for your records.",
        ("amount",)),
    "topup.reversed": _Text(
        "A top-up was reversed: {amount}",
        "A payment that added SMS credit was refunded or disputed, so its funds were taken"
        " back from your balance.",
        "If you did not expect this, check the payment with your bank, and add funds if your"
        " balance is low.",
        ("amount",)),
    "auto_topup.succeeded": _Text(
        "Automatic top-up added {amount} to your SMS credit",
        "Your balance fell to its recharge point, so your saved card was charged"
        " automatically.",
        "Nothing to do. Keep this email for your records.",
        ("amount",)),
    "auto_topup.failed": _Text(
        "Automatic top-up failed: your SMS credit balance is {balance}",
        "Your balance fell to its recharge point, but charging your saved card failed.",
        "Add funds on your billing page, saving a card: once the balance reaches zero, new"
        " messages cannot be sent. After three failures in a row, automatic top-ups pause"
        " until you do.",
        ("balance",)),
}
EVENT_TYPES = frozenset(_TEXTS)


def _amount(data: Mapping[str, Any], name: str) -> Decimal | None:
    """Read one money field exactly (text or Decimal; a float could already be rounded)."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        try:
            amount = parse_decimal_text(value)
        except AmountError as exc:
            raise ValueError(f"data.{name} must be a decimal number") from exc
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = Decimal(value)
    else:
        raise ValueError(f"data.{name} must be a decimal string, not {type(value).__name__}")
    if not amount.is_finite():
        raise ValueError(f"data.{name} must be a finite number")
    return amount


def _address(text: str, what: str) -> str:
    """Return the bare address of `text` ("Billing <b@example.com>" or "b@example.com")."""
    if "\r" in text or "\n" in text:
        raise ValueError(f"{what} must be one line")
    _, address = parseaddr(text)
    if "@" not in address or address.startswith("@") or address.endswith("@"):
        raise ValueError(f"{what} is not an email address")
    return address


def _wrap(paragraph: str) -> list[str]:
    """Lines of at most 72 characters: readable as sent, with no quoted-printable breaks."""
    return textwrap.wrap(paragraph, width=72)


def _one_line(text: str) -> str:
    """Text from the event shown on one line of at most 72 characters."""
    return " ".join(text.split())[:72]


def build_alert_email(sender: str, recipients: Sequence[str],
                      event: Mapping[str, Any]) -> EmailMessage:
    """Build the alert email for one event (raises ValueError for a malformed event)."""
    event_id = event.get("id")
    event_type = event.get("type")
    data = event.get("data")
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise ValueError("the event has no usable id")
    if event_type not in _TEXTS:
        raise ValueError(f"no alert email for event type {event_type!r}")
    if not isinstance(data, Mapping):
        raise ValueError("the event has no data")
    if not recipients:
        raise ValueError("an alert email needs at least one recipient")
    sender_address = _address(sender, "the sender")
    to = [_address(r, "a recipient") for r in recipients]
    text = _TEXTS[event_type]
    currency = data.get("currency", "usd")
    if not isinstance(currency, str) or not re.fullmatch(r"[A-Za-z]{3}", currency):
        raise ValueError("data.currency must be a three-letter code")
    # Shown in whole cents (format_display cuts sub-cent digits, never rounding up).
    shown = {name: format_display(amount, currency)
             for name in ("balance", "threshold", "amount")
             if (amount := _amount(data, name)) is not None}
    missing = [name for name in text.required if name not in shown]
    if missing:
        raise ValueError(f"event {event_type} needs data.{missing[0]}")

    lines = [*_wrap(text.headline), ""]
    for name, label in (("amount", "Top-up amount"), ("balance", "Balance"),
                        ("threshold", "Alert threshold")):
        if name in shown:
            lines.append(f"{label + ':':<17}{shown[name]}")
    reason = data.get("reason")
    if isinstance(reason, str) and reason.strip():
        lines += textwrap.wrap(" ".join(reason.split())[:_MAX_REASON], width=72,
                               initial_indent=f"{'Reason:':<17}", subsequent_indent=" " * 17)
    lines += ["", *_wrap(text.advice), ""]
    org_id = data.get("orgId")
    if isinstance(org_id, str):
        lines.append(f"Organization: {_one_line(org_id)}")
    created = event.get("createdAt")
    when = f" at {_one_line(created)}" if isinstance(created, str) else ""
    lines += [f"Event: {event_type}{when}", f"Event id: {event_id}", "",
              *_wrap("You receive this email because your address is on your organization's"
                     " billing alert list.")]

    message = EmailMessage()
    message["Subject"] = text.subject.format(**shown)
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Date"] = formatdate(usegmt=True)
    # The same event always has the same Message-ID, so a resent alert (a retry after an
    # uncertain failure) is recognisable as the same email by mail clients and by people.
    # Short, so the header is not folded onto a second line for a usual domain.
    message["Message-ID"] = f"<{event_id}@{sender_address.rsplit('@', 1)[1]}>"
    message["X-Billing-Event-Id"] = event_id
    # RFC 3834: an automatic message, so vacation responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + "\n")
    return message


@dataclass(frozen=True)
class SmtpServer:
    """Where and how to send: host, port, implicit TLS or not, optional login."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None


def parse_smtp_url(smtp_url: str) -> SmtpServer:
    """Read smtp://[user:password@]host[:port] or smtps://...; raise ValueError if unusable.

    The error never repeats the URL: it may hold a password.
    """
    try:
        parts = urlsplit(smtp_url)
        port = parts.port
    except ValueError:
        raise ValueError("the SMTP URL is not valid (check the host and port)") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("the SMTP URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("the SMTP URL has no host")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return SmtpServer(parts.hostname, port or DEFAULT_PORTS[parts.scheme],
                      parts.scheme == "smtps", username, password)


def _failure(exc: BaseException, timeout: float) -> str:
    """A short description of an SMTP or network failure: no URL, no password, no trace."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return f"the SMTP server refused the login ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "the SMTP server refused every recipient"
    if isinstance(exc, smtplib.SMTPSenderRefused):
        return f"the SMTP server refused the sender ({exc.smtp_code})"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the SMTP server answered {exc.smtp_code}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the SMTP server closed the connection"
    if isinstance(exc, smtplib.SMTPException):
        return f"SMTP failed: {type(exc).__name__}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS with the SMTP server failed: {exc.verify_message or 'certificate'}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the SMTP server failed: {exc.reason or 'handshake'}"
    if isinstance(exc, socket.gaierror):
        return "the SMTP host does not resolve"
    if isinstance(exc, TimeoutError):
        return f"the SMTP server did not answer within {timeout:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "the SMTP server refused the connection"
    if isinstance(exc, OSError):
        return f"could not reach the SMTP server ({exc.strerror or type(exc).__name__})"
    return f"SMTP failed: {type(exc).__name__}"


def _deliver(server: SmtpServer, message: EmailMessage, sender: str, recipients: list[str], *,
             timeout: float, tls: ssl.SSLContext) -> None:
    """Hand the message to the SMTP server (TLS as the URL says, or STARTTLS when offered)."""
    client: smtplib.SMTP
    try:
        if server.implicit_tls:
            client = smtplib.SMTP_SSL(server.host, server.port, timeout=timeout, context=tls)
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=timeout)
        with client:
            client.ehlo()
            if not server.implicit_tls and client.has_extn("starttls"):
                client.starttls(context=tls)
                client.ehlo()
            if server.username is not None:
                if not server.implicit_tls and not isinstance(client.sock, ssl.SSLSocket):
                    raise EmailFailed("the SMTP server offers no TLS: the password is not"
                                      " sent in clear")
                client.login(server.username, server.password or "")
            refused = client.send_message(message, from_addr=sender, to_addrs=recipients)
    except EmailFailed:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise EmailFailed(_failure(exc, timeout)) from None
    if refused:
        raise EmailFailed(f"the SMTP server refused {len(refused)} of {len(recipients)}"
                          " recipients")


def send_alert_email(smtp_url: str, sender: str, recipients: Sequence[str],
                     event: Mapping[str, Any], *, timeout: float = 15) -> None:
    """Email one billing event to the org's billing addresses through the SMTP server.

    Raises ValueError for a malformed event, sender or URL, EmailFailed when the server
    does not take the message.
    """
    message = build_alert_email(sender, recipients, event)
    server = parse_smtp_url(smtp_url)
    to = [_address(r, "a recipient") for r in recipients]
    _deliver(server, message, _address(sender, "the sender"), to, timeout=timeout,
             tls=ssl.create_default_context())
