"""PUT /orgs/<orgId>/pricing: an org's own SMS price, shown in GET /balance and charged."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory


def _pricing(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, price: object,
             role: str = "admin"):  # type: ignore[no-untyped-def]
    return client.put(f"/api/billing/orgs/{org}/pricing", headers=auth(role, org),
                      json={"smsPrice": price})


def test_price_shows_in_balance_and_applies_to_charges(client: FlaskClient, auth: TokenFactory,
                                                       credit, org: uuid.UUID) -> None:
    credit(org, "1.00")
    before = client.get("/api/billing/balance", headers=auth("member", org)).get_json()
    assert before["smsPrice"] == Decimal("0.0075")
    response = _pricing(client, auth, org, "0.0125")
    assert response.status_code == 200
    assert response.get_json() == {"orgId": str(org), "smsPrice": Decimal("0.0125"),
                                   "source": "org"}
    after = client.get("/api/billing/balance", headers=auth("member", org)).get_json()
    assert after["smsPrice"] == Decimal("0.0125")
    client.post("/api/billing/deduct", headers=auth("service"),
                json={"orgId": str(org), "smsCount": 4, "messageId": "m"})
    assert client.get("/api/billing/balance", headers=auth("member", org)).get_json()[
        "balance"] == Decimal("0.95")


def test_null_goes_back_to_the_default(client: FlaskClient, auth: TokenFactory,
                                       org: uuid.UUID) -> None:
    _pricing(client, auth, org, "0.02")
    response = _pricing(client, auth, org, None)
    assert response.get_json() == {"orgId": str(org), "smsPrice": Decimal("0.0075"),
                                   "source": "default"}
    assert client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin")).get_json()[
        "smsPrice"] == Decimal("0.0075")


def test_pricing_an_unseen_org_creates_it_at_zero(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID) -> None:
    assert _pricing(client, auth, org, "0.01").status_code == 200
    body = client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin")).get_json()
    assert (body["balance"], body["smsPrice"]) == (Decimal("0.00"), Decimal("0.01"))


@pytest.mark.parametrize("role", ["member", "service"])
def test_only_admins_set_prices(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                role: str) -> None:
    assert _pricing(client, auth, org, "0.0001", role).status_code == 403
    assert client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin")).get_json()[
        "smsPrice"] == Decimal("0.0075")


@pytest.mark.parametrize("price", ["0", "-0.01", "0.00001", "NaN", "abc", True])
def test_invalid_prices_are_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                price: object) -> None:
    response = _pricing(client, auth, org, price)
    assert response.status_code == 400
    assert "smsPrice" in response.get_json()["error"]["fields"]


def test_missing_price_and_bad_org_id(client: FlaskClient, auth: TokenFactory,
                                      org: uuid.UUID) -> None:
    response = client.put(f"/api/billing/orgs/{org}/pricing", headers=auth("admin"), json={})
    assert response.status_code == 400
    response = client.put("/api/billing/orgs/not-a-uuid/pricing", headers=auth("admin"),
                          json={"smsPrice": "0.01"})
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
