"""Standard Webhooks signatures for outbound webhooks: secrets, signing and verification.

The scheme (https://www.standardwebhooks.com/, spec/standard-webhooks.md in
github.com/standard-webhooks/standard-webhooks): HMAC-SHA256 over
"{webhook-id}.{webhook-timestamp}.{body}" with the secret's bytes, sent as
"v1,<base64>" in `webhook-signature`. A receiver verifies with `verify` (or any Standard
Webhooks library); the platform's documentation points at this function.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping

SECRET_PREFIX = "whsec_"  # noqa: S105  # the format's prefix, not a secret
# The spec asks for at least 24 random bytes (192 bits) for a symmetric secret.
SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
# The spec's example tolerance (and every reference library's): 5 minutes either way.
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A webhook whose signature or timestamp does not verify."""


def new_secret() -> str:
    """Return a fresh signing secret: "whsec_" + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _secret_key(secret: str) -> bytes:
    """Decode the secret's key bytes (the part after "whsec_"), refusing an unusable one."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        # The message names the problem, never the secret (errors end up in logs).
        raise SignatureError("the signing secret is not valid base64") from exc
    if not key:
        raise SignatureError("the signing secret is empty")
    return key


def _digest(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> bytes:
    """HMAC-SHA256 of the signed content "{id}.{timestamp}.{body}"."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def signature(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the `webhook-signature` value for this message: "v1,<base64 HMAC-SHA256>"."""
    digest = _digest(_secret_key(secret), webhook_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the headers of one delivery attempt: the three webhook-* headers and the type."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, webhook_id, timestamp, body),
        "Content-Type": "application/json",
    }


def _header(headers: Mapping[str, str], name: str) -> str:
    """Return a header by case-insensitive name (HTTP header names are), or refuse."""
    for key, value in headers.items():
        if key.lower() == name:
            if not value:
                break
            return value
    raise SignatureError(f"missing {name} header")


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: int | None = None,
           tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Check a received webhook's signature and timestamp; raise SignatureError if either fails.

    `body` must be the exact bytes received: parsing and re-serializing JSON changes them.
    The signature header may hold several space-separated signatures (a sender signs with
    the old and the new secret while it rotates them); one valid "v1" entry is enough.
    """
    webhook_id = _header(headers, "webhook-id")
    timestamp_text = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    # Whole seconds only, as the spec says; int() would also take " 12", "+12" and "1_2".
    if not timestamp_text.isascii() or not timestamp_text.isdigit():
        raise SignatureError("webhook-timestamp is not a whole number of seconds")
    timestamp = int(timestamp_text)
    current = int(time.time()) if now is None else now
    # Too new is refused as well as too old: a signed future timestamp would widen the
    # window in which a captured message can be replayed.
    if abs(current - timestamp) > tolerance:
        raise SignatureError("webhook-timestamp is outside the allowed tolerance")
    expected = _digest(_secret_key(secret), webhook_id, timestamp, body)
    for entry in signatures.split(" "):
        version, _, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION:
            # Other schemes (v1a, asymmetric) may sit beside ours; they are not ours to check.
            continue
        try:
            candidate = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Constant time, so the comparison does not tell an attacker how much was right.
        if hmac.compare_digest(expected, candidate):
            return
    raise SignatureError("no valid signature")
