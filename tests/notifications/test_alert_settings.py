"""GET/PUT /orgs/<orgId>/alerts: the threshold in force (the org's or the default) and the
billing emails, for the org's member or an admin, exactly and nobody else's."""

from __future__ import annotations

import uuid

import pytest
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory


def _path(org: uuid.UUID) -> str:
    return f"/api/billing/orgs/{org}/alerts"


def test_an_org_that_set_nothing_has_the_default(client: FlaskClient, auth: TokenFactory,
                                                 org: uuid.UUID) -> None:
    response = client.get(_path(org), headers=auth("member", org))
    assert response.status_code == 200
    assert response.get_json() == {"orgId": str(org), "lowBalanceThreshold": 5.00,
                                   "emails": [], "source": "default"}


def test_a_member_sets_its_orgs_threshold_and_emails(client: FlaskClient, auth: TokenFactory,
                                                     org: uuid.UUID) -> None:
    body = {"lowBalanceThreshold": "12.50",
            "emails": ["billing@customer.example", "Ops@Customer.example",
                       "ops@customer.example"]}
    put = client.put(_path(org), headers=auth("member", org), json=body)
    assert put.status_code == 200, put.get_json()
    expected = {"orgId": str(org), "lowBalanceThreshold": 12.50,
                "emails": ["billing@customer.example", "Ops@Customer.example"], "source": "org"}
    assert put.get_json() == expected
    assert client.get(_path(org), headers=auth("admin")).get_json() == expected
    reset = client.put(_path(org), headers=auth("admin"),
                       json={"lowBalanceThreshold": None, "emails": []})
    assert reset.get_json()["source"] == "default"
    assert reset.get_json()["lowBalanceThreshold"] == 5.00


def test_nobody_reads_or_sets_another_orgs_alerts(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID, other_org: uuid.UUID) -> None:
    client.put(_path(other_org), headers=auth("admin"),
               json={"lowBalanceThreshold": 40, "emails": ["x@other.example"]})
    assert client.get(_path(other_org), headers=auth("member", org)).status_code == 403
    assert client.put(_path(other_org), headers=auth("member", org), json={
        "lowBalanceThreshold": 1, "emails": []}).status_code == 403
    assert client.get(_path(org), headers=auth("service")).status_code == 403
    assert client.get(_path(org)).status_code == 401
    assert client.get(_path(other_org), headers=auth("admin")).get_json()[
        "lowBalanceThreshold"] == 40.00


@pytest.mark.parametrize(("body", "field"), [
    ({"lowBalanceThreshold": 0, "emails": []}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": -5, "emails": []}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": "5.001", "emails": []}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": "NaN", "emails": []}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": 2000000, "emails": []}, "lowBalanceThreshold"),
    ({"emails": []}, "lowBalanceThreshold"),
    ({"lowBalanceThreshold": 5}, "emails"),
    ({"lowBalanceThreshold": 5, "emails": ["not an address"]}, "emails"),
    ({"lowBalanceThreshold": 5, "emails": [f"a{n}@x.example" for n in range(11)]}, "emails"),
])
def test_bad_settings_are_refused_and_change_nothing(client: FlaskClient, auth: TokenFactory,
                                                     org: uuid.UUID, body: dict,
                                                     field: str) -> None:
    response = client.put(_path(org), headers=auth("member", org), json=body)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["fields"]
    assert client.get(_path(org), headers=auth("member", org)).get_json()["source"] == "default"
