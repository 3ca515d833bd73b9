"""Text PostgreSQL cannot store (NUL, lone surrogates) is a 400, never a 500 (found by
schemathesis)."""

from __future__ import annotations

import uuid

import pytest
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory


@pytest.mark.parametrize("raw", ['"a\\u0000b"', '"\\ud800"', '"x\\udfff"'])
def test_unstorable_text_is_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                raw: str) -> None:
    body = f'{{"amount": "1.00", "orgId": "{org}", "description": {raw}}}'
    response = client.post("/api/billing/add-funds", data=body,
                           headers={**auth("admin"), "Content-Type": "application/json"})
    assert response.status_code == 400
    assert "description" in response.get_json()["error"]["fields"]


def test_unstorable_text_in_a_bulk_item_is_invalid(client: FlaskClient, auth: TokenFactory,
                                                   credit, org: uuid.UUID) -> None:
    credit(org, "1.00")
    body = (f'{{"charges": [{{"orgId": "{org}", "smsCount": 1, "messageId": "m\\u0000"}},'
            f' {{"orgId": "{org}", "smsCount": 1, "messageId": "ok"}}]}}')
    results = client.post("/api/billing/deduct/bulk", data=body, headers={
        **auth("service"), "Content-Type": "application/json"}).get_json()["results"]
    assert [r["outcome"] for r in results] == ["invalid", "charged"]
    assert "NUL" in results[0]["reason"]
