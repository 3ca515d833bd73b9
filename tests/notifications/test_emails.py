"""Alert emails arrive at a real SMTP server with the right envelope, subject, amounts and
Message-ID; plain, STARTTLS and implicit TLS with a login; failures are short EmailFailed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from billing_gateway.notifications import emails
from billing_gateway.notifications.emails import (
    EVENT_TYPES,
    EmailFailed,
    SmtpServer,
    build_alert_email,
    parse_smtp_url,
    send_alert_email,
)
from tests.plugins.smtp import (
    LocalSmtpServer,
    ReceivedMail,
    TestCertificates,
    make_certificates,
    running_smtp_server,
)

# The fixture, imported because tests/conftest.py does not list tests.plugins.smtp (yet).

SENDER = "Billing <billing@sms.example.com>"
RECIPIENTS = ["ana@customer.example", "ops@customer.example"]
EVENT_ID = "5f0c6a8e-3b1d-4c2a-9e7f-1a2b3c4d5e6f"
ORG_ID = "4b0d6c1e-8a51-4d8e-9d59-3c0b1f6f0a42"


def event(event_type: str, **data: Any) -> dict[str, Any]:
    return {"id": EVENT_ID, "type": event_type, "createdAt": "2026-11-25T10:00:00Z",
            "data": {"orgId": ORG_ID, **data}}


def body_of(mail: ReceivedMail) -> str:
    part = mail.message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    return make_certificates(tmp_path_factory.mktemp("smtp-tls"), ("localhost",))


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (found by a server that then stopped)."""
    with running_smtp_server() as server:
        port = server.port
    return port


# ---- what arrives ----

def test_balance_low_email_arrives(smtp_server: LocalSmtpServer) -> None:
    send_alert_email(smtp_server.url, SENDER, RECIPIENTS,
                     event("balance.low", balance="4.50", threshold="5.00"))
    [mail] = smtp_server.wait_for(1)
    assert mail.mail_from == "billing@sms.example.com"
    assert mail.rcpt_tos == RECIPIENTS
    message = mail.message
    assert message["Subject"] == "Your SMS credit balance is low: $4.50"
    assert message["From"] == SENDER
    assert message["To"] == "ana@customer.example, ops@customer.example"
    assert message["Message-ID"] == f"<{EVENT_ID}@sms.example.com>"
    assert message["X-Billing-Event-Id"] == EVENT_ID
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    body = body_of(mail)
    assert "Balance:         $4.50" in body
    assert "Alert threshold: $5.00" in body
    assert "Add funds" in body
    assert ORG_ID in body and EVENT_ID in body


def test_balance_depleted_email_arrives(smtp_server: LocalSmtpServer) -> None:
    send_alert_email(smtp_server.url, SENDER, ["ana@customer.example"],
                     event("balance.depleted", balance="0"))
    [mail] = smtp_server.wait_for(1)
    assert mail.rcpt_tos == ["ana@customer.example"]
    assert mail.message["Subject"] == "Your SMS credit is used up: $0.00"
    assert mail.message["Message-ID"] == f"<{EVENT_ID}@sms.example.com>"
    body = body_of(mail)
    assert "Balance:         $0.00" in body
    assert "Alert threshold" not in body  # the event has none
    assert "cannot be sent until you add funds" in body


def test_a_resent_event_has_the_same_message_id(smtp_server: LocalSmtpServer) -> None:
    for _ in range(2):
        send_alert_email(smtp_server.url, SENDER, RECIPIENTS,
                         event("balance.low", balance="4.50", threshold="5.00"))
    first, second = smtp_server.wait_for(2)
    assert first.message["Message-ID"] == second.message["Message-ID"]


# ---- the message itself ----

@pytest.mark.parametrize(("event_type", "data", "subject"), [
    ("balance.low", {"balance": "4.5", "threshold": "5"},
     "Your SMS credit balance is low: $4.50"),
    ("balance.depleted", {"balance": "0.0000"}, "Your SMS credit is used up: $0.00"),
    ("balance.recovered", {"balance": "25", "threshold": "5.00"},
     "Your SMS credit balance is back to $25.00"),
    ("topup.succeeded", {"amount": "50.00", "balance": "54.50"},
     "Funds added to your SMS credit: $50.00"),
    ("topup.reversed", {"amount": "50.00", "balance": "4.50"},
     "A top-up was reversed: $50.00"),
    ("auto_topup.succeeded", {"amount": "20.00", "balance": "24.10"},
     "Automatic top-up added $20.00 to your SMS credit"),
    ("auto_topup.failed", {"balance": "3.00", "amount": "20.00",
                           "reason": "Your card was declined."},
     "Automatic top-up failed: your SMS credit balance is $3.00"),
])
def test_every_event_type_has_its_subject(event_type: str, data: dict[str, str],
                                          subject: str) -> None:
    message = build_alert_email(SENDER, RECIPIENTS, event(event_type, **data))
    assert message["Subject"] == subject


def test_every_event_type_is_covered() -> None:
    assert {"balance.low", "balance.depleted", "balance.recovered", "topup.succeeded",
            "topup.reversed", "auto_topup.succeeded", "auto_topup.failed"} == EVENT_TYPES


@pytest.mark.parametrize(("balance", "shown"), [
    ("4.5", "$4.50"),
    ("4.505", "$4.50"),            # sub-cent digits are cut, never rounded up
    ("4.5099", "$4.50"),
    (Decimal("1234567.8999"), "$1234567.89"),
    (7, "$7.00"),
    ("0.0001", "$0.00"),
    ("1E+2", "$100.00"),
])
def test_amounts_are_exact_with_two_decimals(balance: Any, shown: str) -> None:
    message = build_alert_email(SENDER, RECIPIENTS, event("balance.low", balance=balance))
    assert message["Subject"] == f"Your SMS credit balance is low: {shown}"
    assert f"Balance:         {shown}\n" in str(message.get_content())


def test_other_currencies_show_their_own_unit() -> None:
    message = build_alert_email(SENDER, RECIPIENTS,
                                event("topup.succeeded", amount="50", currency="eur"))
    assert message["Subject"] == "Funds added to your SMS credit: €50.00"


def test_failed_auto_topup_says_why_on_one_line() -> None:
    message = build_alert_email(SENDER, RECIPIENTS, event(
        "auto_topup.failed", balance="3", reason="Your card\r\nwas declined."))
    assert "Reason:          Your card was declined.\n" in str(message.get_content())


def test_long_reason_is_wrapped_and_cut() -> None:
    message = build_alert_email(SENDER, RECIPIENTS, event(
        "auto_topup.failed", balance="3", reason="declined " * 100))
    lines = str(message.get_content()).splitlines()
    assert max(len(line) for line in lines) <= 72
    # At most 200 characters of it: 22 whole "declined " and the start of the next.
    assert sum(line.count("declined") for line in lines) == 22


@pytest.mark.parametrize(("bad_event", "message"), [
    (event("balance.low", balance=4.5), "not float"),
    (event("balance.low", balance="4,50"), "decimal number"),
    (event("balance.low", balance="NaN"), "decimal number"),
    (event("balance.low", balance=True), "not bool"),
    (event("balance.low"), "needs data.balance"),
    (event("topup.succeeded", balance="4.50"), "needs data.amount"),
    (event("balance.exploded", balance="1"), "no alert email for event type"),
    (event("balance.low", balance="1", currency="dollars"), "three-letter"),
    ({**event("balance.low", balance="1"), "id": "x>\r\nBcc: all@example.com"}, "usable id"),
    ({**event("balance.low", balance="1"), "id": None}, "usable id"),
    ({**event("balance.low"), "data": "4.50"}, "no data"),
])
def test_malformed_events_are_refused(bad_event: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_alert_email(SENDER, RECIPIENTS, bad_event)


@pytest.mark.parametrize(("sender", "recipients", "message"), [
    (SENDER, [], "at least one recipient"),
    (SENDER, ["not-an-address"], "not an email address"),
    (SENDER, ["a@example.com\r\nBcc: all@example.com"], "one line"),
    ("billing", RECIPIENTS, "not an email address"),
])
def test_bad_addresses_are_refused(sender: str, recipients: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_alert_email(sender, recipients, event("balance.low", balance="1"))


# ---- the SMTP URL ----

@pytest.mark.parametrize(("url", "server"), [
    ("smtp://mail.example.com", SmtpServer("mail.example.com", 25, False, None, None)),
    ("smtp://mail.example.com:587", SmtpServer("mail.example.com", 587, False, None, None)),
    ("smtps://mail.example.com", SmtpServer("mail.example.com", 465, True, None, None)),
    ("smtps://apikey:p%40ss%3Aw%2Frd@mail.example.com:2465",
     SmtpServer("mail.example.com", 2465, True, "apikey", "p@ss:w/rd")),
    ("smtp://user%40example.com:@mail.example.com",
     SmtpServer("mail.example.com", 25, False, "user@example.com", "")),
])
def test_smtp_urls_are_read(url: str, server: SmtpServer) -> None:
    assert parse_smtp_url(url) == server


@pytest.mark.parametrize(("url", "message"), [
    ("http://mail.example.com", "smtp:// or smtps://"),
    ("mail.example.com:25", "smtp:// or smtps://"),
    ("smtp://", "no host"),
    ("smtp://user:s3cret@mail.example.com:99999", "not valid"),
])
def test_bad_smtp_urls_are_refused_without_echoing_them(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        parse_smtp_url(url)
    assert "s3cret" not in str(refused.value)


# ---- failures ----

def test_nothing_listening_fails_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(EmailFailed) as failed:
        send_alert_email(f"smtp://user:s3cret@127.0.0.1:{closed_port()}", SENDER, RECIPIENTS,
                         event("balance.low", balance="4.50"), timeout=5)
    assert time.monotonic() - started < 1
    assert str(failed.value) == "the SMTP server refused the connection"


def test_unresolvable_host_fails() -> None:
    with pytest.raises(EmailFailed, match="does not resolve"):
        send_alert_email("smtp://no-such-host.invalid", SENDER, RECIPIENTS,
                         event("balance.low", balance="4.50"), timeout=5)


def test_a_refused_recipient_fails_the_email(smtp_server: LocalSmtpServer) -> None:
    smtp_server.unknown_recipients.add("ops@customer.example")
    with pytest.raises(EmailFailed, match="refused 1 of 2 recipients"):
        send_alert_email(smtp_server.url, SENDER, RECIPIENTS,
                         event("balance.low", balance="4.50"))


def test_every_recipient_refused_fails_the_email(smtp_server: LocalSmtpServer) -> None:
    smtp_server.unknown_recipients.update(RECIPIENTS)
    with pytest.raises(EmailFailed, match="refused every recipient"):
        send_alert_email(smtp_server.url, SENDER, RECIPIENTS,
                         event("balance.low", balance="4.50"))
    assert smtp_server.messages == []


def test_password_is_never_sent_without_tls(smtp_server: LocalSmtpServer) -> None:
    with pytest.raises(EmailFailed, match="not sent in clear"):
        send_alert_email(f"smtp://user:s3cret@127.0.0.1:{smtp_server.port}", SENDER,
                         RECIPIENTS, event("balance.low", balance="4.50"))
    assert smtp_server.messages == []


# ---- TLS and login ----

@pytest.fixture
def starttls_server(certificates: TestCertificates) -> Iterator[LocalSmtpServer]:
    with running_smtp_server(starttls=certificates.server_context(),
                             credentials=("alerts", "p@ss:word")) as server:
        yield server


@pytest.fixture
def smtps_server(certificates: TestCertificates) -> Iterator[LocalSmtpServer]:
    with running_smtp_server(implicit_tls=certificates.server_context(),
                             credentials=("alerts", "p@ss:word")) as server:
        yield server


def deliver_trusting(certificates: TestCertificates, url: str) -> None:
    """Send as send_alert_email does, trusting the test CA instead of the system's."""
    message = build_alert_email(SENDER, RECIPIENTS, event("balance.low", balance="4.50"))
    emails._deliver(parse_smtp_url(url), message, "billing@sms.example.com", RECIPIENTS,
                    timeout=5, tls=certificates.client_context())


def test_starttls_then_login(starttls_server: LocalSmtpServer,
                             certificates: TestCertificates) -> None:
    deliver_trusting(certificates,
                     f"smtp://alerts:p%40ss%3Aword@localhost:{starttls_server.port}")
    [mail] = starttls_server.wait_for(1)
    assert starttls_server.logins == [("alerts", "p@ss:word")]
    assert mail.message["Subject"] == "Your SMS credit balance is low: $4.50"


def test_implicit_tls_then_login(smtps_server: LocalSmtpServer,
                                 certificates: TestCertificates) -> None:
    deliver_trusting(certificates,
                     f"smtps://alerts:p%40ss%3Aword@localhost:{smtps_server.port}")
    smtps_server.wait_for(1)
    assert smtps_server.logins == [("alerts", "p@ss:word")]


def test_wrong_password_is_refused(starttls_server: LocalSmtpServer,
                                   certificates: TestCertificates) -> None:
    with pytest.raises(EmailFailed, match=r"refused the login \(535\)") as failed:
        deliver_trusting(certificates, f"smtp://alerts:wrong@localhost:{starttls_server.port}")
    assert "wrong" not in str(failed.value)
    assert starttls_server.messages == []


def test_certificates_are_verified(starttls_server: LocalSmtpServer) -> None:
    # send_alert_email trusts the system's authorities only: the test CA is not one.
    with pytest.raises(EmailFailed, match=r"TLS with the SMTP server failed: .*certificate"):
        send_alert_email(f"smtp://alerts:p%40ss%3Aword@localhost:{starttls_server.port}",
                         SENDER, RECIPIENTS, event("balance.low", balance="4.50"), timeout=5)
    assert starttls_server.logins == []


def test_certificate_must_name_the_host(smtps_server: LocalSmtpServer,
                                        certificates: TestCertificates) -> None:
    # The certificate names "localhost"; 127.0.0.1 is the same server under another name.
    with pytest.raises(EmailFailed, match="TLS with the SMTP server failed"):
        deliver_trusting(certificates, f"smtps://alerts:x@127.0.0.1:{smtps_server.port}")
