"""Idempotency keys: the first answer to a POST is stored and replayed to every retry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from billing_gateway.platform import json_codec
from billing_gateway.platform.errors import IdempotencyConflict


@dataclass(frozen=True)
class StoredResponse:
    """The answer recorded for a key."""

    status_code: int
    body: str


def fingerprint(method: str, path: str, org_id: UUID | None, body: Any) -> str:
    """Hash what makes two requests "the same": method, path, org and the parsed body."""
    canonical = json_codec.dumps([method, path, str(org_id), body], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def claim(
    conn: psycopg.Connection, caller: str, key: str, org_id: UUID | None, request_fingerprint: str
) -> StoredResponse | None:
    """Claim `key` for this request, or return the stored answer of the request that did.

    Runs inside the request's transaction. A concurrent request with the same key blocks
    on the primary key until the first one commits (then it replays its answer) or rolls
    back (then it claims the key itself), so two racing retries never both write.
    """
    inserted = conn.execute(
        "INSERT INTO idempotency_keys (caller, key, org_id, fingerprint)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (caller, key) DO NOTHING RETURNING 1",
        (caller, key, org_id, request_fingerprint),
    ).fetchone()
    if inserted:
        return None
    stored = lookup(conn, caller, key, request_fingerprint)
    if stored is None:  # the row exists: it was answered (claims commit with their answer)
        raise IdempotencyConflict("This Idempotency-Key was already used with a different request")
    return stored


def lookup(
    conn: psycopg.Connection, caller: str, key: str, request_fingerprint: str
) -> StoredResponse | None:
    """Return the stored answer for `key`, None if it was never used; 409 if it was used
    for a different request."""
    row = conn.execute(
        "SELECT fingerprint, status_code, response_body FROM idempotency_keys"
        " WHERE caller = %s AND key = %s",
        (caller, key),
    ).fetchone()
    if row is None:
        return None
    if row[0] != request_fingerprint:
        raise IdempotencyConflict(
            "This Idempotency-Key was already used with a different request"
        )
    return StoredResponse(status_code=row[1], body=row[2])


def store(
    conn: psycopg.Connection,
    caller: str,
    key: str,
    response: StoredResponse,
    transaction_id: UUID | None,
) -> None:
    """Record the answer for a claimed key, in the same transaction as its ledger effect."""
    conn.execute(
        "UPDATE idempotency_keys SET status_code = %s, response_body = %s, transaction_id = %s"
        " WHERE caller = %s AND key = %s",
        (response.status_code, response.body, transaction_id, caller, key),
    )
