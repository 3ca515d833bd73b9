"""Outbound webhook signatures are Standard Webhooks signatures: the reference vector, the
reference library's signing and verification, and every refusal of `verify`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from billing_gateway.notifications.signing import (
    SignatureError,
    new_secret,
    signature,
    signed_headers,
    verify,
)

# The reference vector of Standard Webhooks, from test_sign_function in
# github.com/standard-webhooks/standard-webhooks, libraries/python/tests/test_webhooks.py
# (the same vector is in svix-webhooks' libraries and Standard Webhooks' other ones).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_PAYLOAD = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

NOW = 1_790_000_000
BODY = json.dumps({"type": "balance.low", "timestamp": "2026-11-25T10:00:00Z",
                   "data": {"orgId": "4b0d6c1e-8a51-4d8e-9d59-3c0b1f6f0a42", "balance": "4.50",
                            "threshold": "5.00"}}, separators=(",", ":")).encode()


def test_signature_matches_the_reference_vector() -> None:
    assert signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD) \
        == VECTOR_SIGNATURE


def test_reference_vector_verifies() -> None:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
               "webhook-signature": VECTOR_SIGNATURE}
    verify(VECTOR_SECRET, headers, VECTOR_PAYLOAD, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize(("webhook_id", "timestamp", "body"), [
    ("msg_1", 1, b"{}"),
    ("evt_2KWPBgLlAfxdpx2AI54pPJ85f4W", 1674087231, BODY),
    ("0b6f5a52-6b8e-4a55-9e0a-8d3f2f0c7b11", NOW, "{\"name\":\"Zoë ✓\"}".encode()),
    ("msg_empty", NOW, b""),
])
def test_signature_equals_the_reference_library(webhook_id: str, timestamp: int,
                                                body: bytes) -> None:
    secret = new_secret()
    theirs = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, UTC),
                                  body.decode())
    assert signature(secret, webhook_id, timestamp, body) == theirs


def test_reference_library_accepts_our_headers() -> None:
    secret = new_secret()
    now = int(datetime.now(UTC).timestamp())  # the library checks against the real clock
    headers = signed_headers(secret, "evt_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_signed_headers_are_the_three_webhook_headers_and_json() -> None:
    headers = signed_headers(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_PAYLOAD)
    assert headers == {"webhook-id": VECTOR_ID, "webhook-timestamp": "1614265330",
                       "webhook-signature": VECTOR_SIGNATURE,
                       "Content-Type": "application/json"}


def test_new_secret_is_24_random_bytes_with_the_prefix() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 24
    assert first != second


def test_verify_accepts_headers_in_any_case() -> None:
    headers = {k.title(): v for k, v in signed_headers(VECTOR_SECRET, "e", NOW, BODY).items()}
    verify(VECTOR_SECRET, headers, BODY, now=NOW)


def test_verify_accepts_one_valid_signature_among_several_during_rotation() -> None:
    old, current = new_secret(), new_secret()
    header = " ".join([signature(old, "evt_1", NOW, BODY), "v1a,bm90IG91cnM=",
                       signature(current, "evt_1", NOW, BODY)])
    headers = {"webhook-id": "evt_1", "webhook-timestamp": str(NOW), "webhook-signature": header}
    verify(current, headers, BODY, now=NOW)
    verify(old, headers, BODY, now=NOW)


def test_tampered_body_is_refused() -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW, BODY)
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(VECTOR_SECRET, headers, BODY.replace(b"4.50", b"450.0"), now=NOW)


def test_wrong_secret_is_refused() -> None:
    headers = signed_headers(new_secret(), "evt_1", NOW, BODY)
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


def test_changed_id_is_refused() -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW, BODY) | {"webhook-id": "evt_2"}
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


def test_changed_timestamp_is_refused() -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW, BODY) | {
        "webhook-timestamp": str(NOW + 1)}
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_timestamp_outside_the_tolerance_is_refused(age: int) -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW - age, BODY)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("age", [300, -300, 0])
def test_timestamp_at_the_tolerance_is_accepted(age: int) -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW - age, BODY)
    verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(missing: str) -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW, BODY)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing}"):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("timestamp", ["", "soon", "1.5e9", "+1790000000", "1_790_000_000"])
def test_malformed_timestamp_is_refused(timestamp: str) -> None:
    headers = signed_headers(VECTOR_SECRET, "evt_1", NOW, BODY) | {
        "webhook-timestamp": timestamp}
    with pytest.raises(SignatureError):
        verify(VECTOR_SECRET, headers, BODY, now=NOW)


@pytest.mark.parametrize("header", ["v1,", "v1,not base64!", "v2," + VECTOR_SIGNATURE[3:],
                                    VECTOR_SIGNATURE[3:], "v1," + VECTOR_SIGNATURE[3:-2] + "A="])
def test_malformed_or_foreign_signatures_are_refused(header: str) -> None:
    headers = {"webhook-id": VECTOR_ID, "webhook-timestamp": str(VECTOR_TIMESTAMP),
               "webhook-signature": header}
    with pytest.raises(SignatureError, match="no valid signature"):
        verify(VECTOR_SECRET, headers, VECTOR_PAYLOAD, now=VECTOR_TIMESTAMP)


def test_unusable_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(SignatureError) as refused:
        signature("whsec_not*base64", "evt_1", NOW, BODY)
    assert "not*base64" not in str(refused.value)
