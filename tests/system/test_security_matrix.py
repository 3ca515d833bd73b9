"""The security matrix: no unguarded route, no cross-tenant reach, no mass assignment,
and a database role that row level security binds."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway.platform.db import get_pool
from tests.plugins.service import TokenFactory

# Routes anyone may call: probes, the API description, and Stripe's webhook (which
# proves itself with its signature instead of a token).
PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/api/billing/stripe-webhook",
          "/static/<path:filename>",
          # The billing page's stylesheet and script, and its one-time links (the token in
          # the path is the credential; an unknown one is a 404 page, tested in tests/portal).
          "/billing/static/<path:filename>", "/billing/portal/<token>",
          # Prometheus' scrape, on gunicorn's internal address only: nginx answers it 404
          # (tests/platform/test_metrics.py, docs/operations.md).
          "/metrics"}


def _routes(app: Flask) -> list[tuple[str, str]]:
    return sorted((rule.rule, method) for rule in app.url_map.iter_rules()
                  for method in rule.methods - {"HEAD", "OPTIONS"})


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:uuid:)?[^>]+>", str(uuid.uuid4()), rule)


def test_every_route_is_public_or_refuses_a_request_without_a_valid_token(
    app: Flask, client: FlaskClient
) -> None:
    unguarded = []
    routes = _routes(app)
    assert len(routes) >= 12
    for rule, method in routes:
        if rule in PUBLIC:
            continue
        for headers in ({}, {"Authorization": "Bearer not.a.token"},
                        {"Authorization": "Basic YWRtaW46YWRtaW4="}):
            response = client.open(_concrete(rule), method=method, headers=headers, json={})
            if response.status_code != 401:
                unguarded.append((method, rule, headers, response.status_code))
    assert unguarded == []


def test_the_public_allow_list_is_short_and_real(app: Flask) -> None:
    rules = {rule for rule, _ in _routes(app)}
    assert rules & PUBLIC == PUBLIC


ORG_SCOPED = [  # (method, path with {org}, body) reachable by a member
    ("GET", "/api/billing/balance?orgId={org}", None),
    ("GET", "/api/billing/transactions?orgId={org}", None),
    ("POST", "/api/billing/create-checkout", {"amount": "10.00", "orgId": "{org}"}),
]
ADMIN_OR_SERVICE_ONLY = [  # a member of org A must not reach org B through these either
    ("POST", "/api/billing/add-funds", {"amount": "1.00", "orgId": "{org}"}),
    ("POST", "/api/billing/deduct", {"orgId": "{org}", "smsCount": 1, "messageId": "x"}),
    ("POST", "/api/billing/deduct/bulk",
     {"charges": [{"orgId": "{org}", "smsCount": 1, "messageId": "x"}]}),
    ("POST", "/api/billing/usage/refund", {"orgId": "{org}", "messageId": "x"}),
    ("PUT", "/api/billing/orgs/{org}/pricing", {"smsPrice": "0.01"}),
    ("GET", "/api/billing/payments/shortfalls", None),
]


def _fill(value: object, org: uuid.UUID) -> object:
    if isinstance(value, str):
        return value.replace("{org}", str(org))
    if isinstance(value, dict):
        return {k: _fill(v, org) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, org) for v in value]
    return value


@pytest.mark.parametrize("method,path,body", ORG_SCOPED + ADMIN_OR_SERVICE_ONLY)
def test_a_member_of_org_a_reaches_nothing_of_org_b(
    client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID, other_org: uuid.UUID,
    owner_conn: psycopg.Connection, method: str, path: str, body: dict | None,
) -> None:
    credit(other_org, "10.00")
    before = owner_conn.execute("SELECT sms_balance, transaction_count, sms_price FROM"
                                " organizations WHERE id = %s", (other_org,)).fetchone()
    response = client.open(str(_fill(path, other_org)), method=method,
                           headers=auth("member", org), json=_fill(body, other_org))
    assert response.status_code == 403
    assert str(other_org) not in response.get_data(as_text=True)
    after = owner_conn.execute("SELECT sms_balance, transaction_count, sms_price FROM"
                               " organizations WHERE id = %s", (other_org,)).fetchone()
    assert after == before


@pytest.mark.parametrize("field,value", [
    ("balance", 1_000_000), ("sms_balance", 1_000_000), ("org_id", "{other}"),
    ("role", "admin"), ("transactionId", "{uuid}"), ("balance_after", 5),
    ("created_by", "someone-else"),
])
@pytest.mark.parametrize("method,path,body,role", [
    ("POST", "/api/billing/add-funds", {"amount": "1.00", "orgId": "{org}"}, "admin"),
    ("POST", "/api/billing/deduct", {"orgId": "{org}", "smsCount": 1, "messageId": "m"},
     "service"),
    ("POST", "/api/billing/usage/refund", {"orgId": "{org}", "messageId": "m"}, "service"),
    ("PUT", "/api/billing/orgs/{org}/pricing", {"smsPrice": "0.01"}, "admin"),
    ("POST", "/api/billing/create-checkout", {"amount": "10.00"}, "member"),
])
def test_mass_assignment_is_rejected_and_changes_nothing(
    client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID, other_org: uuid.UUID,
    owner_conn: psycopg.Connection, field: str, value: object, method: str, path: str,
    body: dict, role: str,
) -> None:
    credit(org, "2.00")
    payload = dict(_fill(body, org))  # type: ignore[call-overload]
    extra = value
    if value == "{other}":
        extra = str(other_org)
    elif value == "{uuid}":
        extra = str(uuid.uuid4())
    payload[field] = extra
    response = client.open(str(_fill(path, org)), method=method,
                           headers=auth(role, org), json=payload)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    state = owner_conn.execute("SELECT sms_balance, transaction_count, sms_price FROM"
                               " organizations WHERE id = %s", (org,)).fetchone()
    assert state == (Decimal("2.0000"), 1, None)
    assert owner_conn.execute("SELECT count(*) FROM organizations WHERE id = %s",
                              (other_org,)).fetchone() == (0,)


def test_bulk_items_reject_mass_assignment_per_item(client: FlaskClient, auth: TokenFactory,
                                                    credit, org: uuid.UUID) -> None:
    credit(org, "1.00")
    result = client.post("/api/billing/deduct/bulk", headers=auth("service"), json={
        "charges": [{"orgId": str(org), "smsCount": 1, "messageId": "m",
                     "balance": 999}]}).get_json()["results"][0]
    assert result["outcome"] == "invalid" and "balance" in result["fields"]


ORG_OWNED = ("organizations", "billing_transactions", "billing_transaction_counts",
             "idempotency_keys", "checkout_sessions", "stripe_events", "stripe_payments",
             "stripe_disputes")


def test_the_serving_role_is_bound_by_row_level_security(app: Flask) -> None:
    with get_pool(app).connection() as conn:
        role = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls, rolcreaterole, rolcreatedb"
            " FROM pg_roles WHERE rolname = current_user").fetchone()
        owners = {row[0] for row in conn.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")}
        tables = dict(conn.execute(
            "SELECT relname, relrowsecurity AND relforcerowsecurity FROM pg_class"
            " WHERE relname = ANY(%s) AND relkind = 'r'", (list(ORG_OWNED),)).fetchall())
        unprotected = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            " AND c.relname <> 'schema_migrations' AND NOT c.relforcerowsecurity").fetchall()
    assert role == ("billing_app", False, False, False, False)
    assert "billing_app" not in owners
    assert tables == {name: True for name in ORG_OWNED}
    assert unprotected == []


@pytest.mark.parametrize("path,role", [("/api/billing/stripe-webhook", None),
                                       ("/api/billing/deduct/bulk", "service"),
                                       ("/api/billing/create-checkout", "member")])
def test_bodies_over_one_mib_are_413(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                     owner_conn: psycopg.Connection, path: str,
                                     role: str | None) -> None:
    headers = {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}
    if role:
        headers.update(auth(role, org))
    response = client.post(path, data=b'{"x": "' + b"a" * (1 << 20) + b'"}', headers=headers)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert owner_conn.execute("SELECT count(*) FROM stripe_events").fetchone() == (0,)
