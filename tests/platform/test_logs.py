"""Logs are JSON lines that name their request, org and caller, and hold no credential."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from flask.testing import FlaskClient

from billing_gateway.platform import logs
from tests.plugins.database import ledger_inserts_fail
from tests.plugins.service import TokenFactory


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the service logs during the test, through the real formatter and filter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter())
    handler.addFilter(logs.RequestContext())
    logger = logging.getLogger(logs.LOGGER)
    logger.addHandler(handler)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def test_credentials_are_redacted_and_the_rest_is_kept() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    line = (f"GET /billing/portal/Abc-123_x?y=1 Authorization: Bearer {jwt} "
            "key sk_live_51Habc whsec_0123abcd rk_test_9 org 0b4f3c1e-2d6a-4c8e-9f00-123456789abc "
            "amount 52.8825 pi_3Nabc")
    assert logs.redact(line) == (
        "GET /billing/portal/[redacted]?y=1 Authorization: Bearer [redacted] key [redacted] "
        "[redacted] [redacted] org 0b4f3c1e-2d6a-4c8e-9f00-123456789abc amount 52.8825 pi_3Nabc")


def test_an_error_line_names_request_org_and_caller_and_no_token(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, log_lines: io.StringIO) -> None:
    headers = auth("admin", subject="admin-7")
    with ledger_inserts_fail(owner_conn, "disk full"):
        response = client.post("/api/billing/add-funds", headers=headers,
                               json={"amount": "10.00", "orgId": str(org)})
    assert response.status_code == 500
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    assert lines, "the failure was not logged"
    record = lines[-1]
    assert record["level"] == "ERROR" and record["logger"] == "billing_gateway"
    assert record["request_id"] == response.headers["X-Request-Id"]
    assert record["org"] == str(org)
    assert record["caller"] == "admin-7"
    token = headers["Authorization"].split()[1]
    assert token not in log_lines.getvalue()


def test_a_line_outside_a_request_has_empty_context(log_lines: io.StringIO) -> None:
    logging.getLogger(logs.LOGGER).warning("reconcile: %s", "sk_test_abc123 used")
    record = json.loads(log_lines.getvalue())
    assert record["message"] == "reconcile: [redacted] used"
    assert (record["request_id"], record["org"], record["caller"]) == (None, None, None)
