"""Every failure answers with the one JSON error shape, never HTML or a trace."""

from __future__ import annotations

import logging

import pytest
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from tests.plugins.service import TokenFactory


def _assert_error_shape(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


def test_unknown_path_is_json_404(client: FlaskClient) -> None:
    _assert_error_shape(client.get("/api/billing/nope"), 404, "not_found")


def test_wrong_method_is_json_405(client: FlaskClient) -> None:
    response = client.delete("/api/billing/balance")
    _assert_error_shape(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"]


def test_validation_error_lists_fields(client: FlaskClient, auth: TokenFactory) -> None:
    response = client.post("/api/billing/add-funds", headers=auth("admin"),
                           json={"amount": -1, "orgId": "x"})
    _assert_error_shape(response, 400, "validation_error")
    assert set(response.get_json()["error"]["fields"]) == {"amount", "orgId"}


@pytest.fixture
def exploding_app(settings: Settings) -> Flask:
    """The real app plus one route that fails unexpectedly."""
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals: password=hunter2")

    yield app
    app.extensions["billing_pool"].close()


def test_unexpected_exception_is_500_without_details(
    exploding_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="billing_gateway"):
        response = exploding_app.test_client().get("/boom", headers={"X-Request-Id": "req-42"})
    _assert_error_shape(response, 500, "internal_error")
    assert "hunter2" not in response.get_data(as_text=True)
    assert "req-42" in response.get_json()["error"]["message"]
    assert response.headers["X-Request-Id"] == "req-42"
    assert any("req-42" in r.getMessage() and r.exc_info for r in caplog.records)


def test_every_response_carries_a_request_id(client: FlaskClient) -> None:
    assert len(client.get("/healthz").headers["X-Request-Id"]) == 32
