"""Probes and the OpenAPI document."""

from __future__ import annotations

from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.config import Settings


def test_healthz_answers_without_database(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_answers_when_database_reachable(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready"}


def test_readyz_is_503_json_when_database_unreachable(settings: Settings) -> None:
    app = create_app(settings, database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    try:
        response = app.test_client().get("/readyz")
    finally:
        app.extensions["billing_pool"].close()
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"


def test_openapi_describes_every_endpoint(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/billing/balance", "/api/billing/add-funds", "/api/billing/transactions",
            "/healthz", "/readyz"} <= set(spec["paths"])
    add_funds = spec["paths"]["/api/billing/add-funds"]["post"]
    body = add_funds["requestBody"]["content"]["application/json"]["schema"]
    schema = spec["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    assert "amount" in schema["required"]
    assert schema["properties"]["amount"]["type"] == "number"
    assert "201" in add_funds["responses"]


def test_openapi_documents_the_real_error_shape(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    default_error = spec["components"]["responses"]["DEFAULT_ERROR"]["content"]
    ref = default_error["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    error = spec["components"]["schemas"][ref]
    assert error["required"] == ["error"]
    add_funds = spec["paths"]["/api/billing/add-funds"]["post"]["responses"]
    assert "400" in add_funds and "422" not in add_funds
