"""A POST that writes to the ledger: one tenant transaction, replayable by Idempotency-Key."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from flask import Response, current_app, request
from marshmallow import Schema

from billing_gateway.ledger import idempotency
from billing_gateway.ledger.credits import LedgerResult
from billing_gateway.platform import json_codec, money
from billing_gateway.platform.auth import current_caller
from billing_gateway.platform.db import get_db, tenant_set_transaction, tenant_transaction
from billing_gateway.platform.errors import ValidationFailed

MAX_KEY_LENGTH = 255


@dataclass
class LedgerWrite:
    """The open transaction of a write request, and its stored answer if it is a retry."""

    conn: psycopg.Connection
    caller: str
    key: str | None
    replay: Response | None = None

    def respond(
        self, status: int, payload: dict[str, Any], transaction_id: UUID | None = None
    ) -> Response:
        """Serialize the answer and, for a keyed request, store it with the ledger effect."""
        body = json_codec.dumps(payload)
        if self.key is not None:
            idempotency.store(
                self.conn, self.caller, self.key,
                idempotency.StoredResponse(status, body), transaction_id,
            )
        return Response(body, status=status, mimetype="application/json")

    def created(self, result: LedgerResult, schema: Schema, **extra: Any) -> Response:
        """Answer 201 with the row written and the balance after it (plus `extra` fields)."""
        currency = current_app.config["BILLING_SETTINGS"].currency
        payload = schema.dump({
            "transaction_id": result.transaction_id,
            "balance": result.balance,
            "formatted": money.format_display(result.balance, currency),
            **extra,
        })
        return self.respond(201, payload, result.transaction_id)


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            "Idempotency-Key must be 1 to 255 printable characters",
            fields={"Idempotency-Key": ["Invalid key."]},
        )
    return key


@contextmanager
def ledger_write(
    org_id: UUID | None, *, org_ids: Collection[UUID] | None = None
) -> Iterator[LedgerWrite]:
    """Open the org's transaction; with an Idempotency-Key, claim it or load its answer.

    A bulk write names the set of orgs it may touch (org_ids) instead of one org.
    Claim, ledger effect and stored answer commit together or not at all: a failed
    request leaves the key free for its retry.
    """
    caller = current_caller().subject
    key = _idempotency_key()
    scope = (tenant_transaction(get_db(), org_id, caller) if org_ids is None
             else tenant_set_transaction(get_db(), org_ids, caller))
    with scope as conn:
        write = LedgerWrite(conn=conn, caller=caller, key=key)
        if key is not None:
            stored = idempotency.claim(conn, caller, key, org_id, _fingerprint(org_id))
            write.replay = _replay(stored)
        yield write


def stored_answer(conn: psycopg.Connection, org_id: UUID) -> Response | None:
    """The stored answer to this request's Idempotency-Key, without claiming the key.

    For a request that must not hold a transaction open across its work (a Stripe call):
    it looks first, does the work, then claims the key in ledger_write.
    """
    key = _idempotency_key()
    if key is None:
        return None
    stored = idempotency.lookup(conn, current_caller().subject, key, _fingerprint(org_id))
    return _replay(stored)


def _fingerprint(org_id: UUID | None) -> str:
    body = request.get_json(silent=True)
    return idempotency.fingerprint(request.method, request.path, org_id, body)


def _replay(stored: idempotency.StoredResponse | None) -> Response | None:
    if stored is None:
        return None
    replay = Response(stored.body, status=stored.status_code, mimetype="application/json")
    replay.headers["Idempotent-Replayed"] = "true"
    return replay
