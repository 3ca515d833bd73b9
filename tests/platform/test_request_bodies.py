"""Any body the JSON decoder cannot take, including one nested 10,000 levels deep, is a
400 validation_error on every endpoint that reads one; nothing reaches the 500 handler."""

from __future__ import annotations

import uuid

import pytest
from flask.testing import FlaskClient

from billing_gateway.platform import json_codec
from tests.plugins.service import TokenFactory

# (path, role) of every endpoint with a JSON body; members reach create-checkout.
BODY_ENDPOINTS = [
    ("POST", "/api/billing/add-funds", "admin"),
    ("POST", "/api/billing/deduct", "service"),
    ("POST", "/api/billing/deduct/bulk", "service"),
    ("POST", "/api/billing/create-checkout", "member"),
    ("POST", "/api/billing/usage/refund", "service"),
    ("PUT", "/api/billing/orgs/{org}/pricing", "admin"),
]

MALFORMED = {
    "nested_10000_arrays": b"[" * 10_000 + b"]" * 10_000,
    "nested_10000_objects": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    "nested_65_in_a_field": b'{"amount": ' + b"[" * 65 + b"]" * 65 + b"}",
    "unterminated_nesting": b"[" * 100_000,
    "integer_of_5000_digits": b'{"amount": 1' + b"0" * 5000 + b"}",
    "invalid_utf8": b'{"amount": "\xff\xfe"}',
    "nan": b'{"amount": NaN}',
    "truncated": b'{"amount": 1',
    "trailing_garbage": b'{"amount": 1} x',
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
@pytest.mark.parametrize("method,path,role", BODY_ENDPOINTS)
def test_undecodable_body_is_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                 method: str, path: str, role: str, name: str) -> None:
    response = client.open(path.format(org=org), method=method, data=MALFORMED[name], headers={
        **auth(role, org), "Content-Type": "application/json",
        "Idempotency-Key": f"key-{name}"})
    assert response.status_code == 400, response.get_data()[:200]
    assert response.get_json()["error"]["code"] == "validation_error"


def test_nesting_up_to_the_limit_parses() -> None:
    depth = json_codec.MAX_DEPTH
    assert json_codec.loads("[" * depth + "]" * depth) is not None
    with pytest.raises(json_codec.TooDeep):
        json_codec.loads("[" * (depth + 1) + "]" * (depth + 1))


def test_wide_bodies_are_not_deep() -> None:
    items = "[" + ",".join('{"a": [1, {"b": 2}]}' for _ in range(1000)) + "]"
    assert len(json_codec.loads(items)) == 1000
