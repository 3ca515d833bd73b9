"""Tokens and roles: every unusable token is a JSON 401, the wrong role a JSON 403."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import uuid
from decimal import Decimal

import jwt
import pytest
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from tests.plugins.service import TEST_SECRET, TokenFactory

BALANCE = "/api/billing/balance"


def _token(claims: dict, key: str = TEST_SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _claims(**extra: object) -> dict:
    now = dt.datetime.now(dt.UTC)
    return {"sub": "u1", "exp": now + dt.timedelta(minutes=5), "org_id": str(uuid.uuid4()),
            **extra}


def _unsigned(claims: dict) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj, default=str).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _hmac_signed(claims: dict, key: bytes) -> str:
    """Sign HS256 by hand (PyJWT refuses a PEM key as an HMAC secret, attackers do not)."""
    def part(obj: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(obj, default=str).encode()).rstrip(b"=")
    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(
        {**claims, "exp": int(claims["exp"].timestamp())})
    signature = base64.urlsafe_b64encode(
        hmac.new(key, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def _assert_unauthorized(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer a.b.c",
    ],
    ids=["missing", "empty-bearer", "garbage", "basic-scheme", "bad-segments"],
)
def test_missing_or_malformed_token_is_401(client: FlaskClient, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    _assert_unauthorized(client.get(BALANCE, headers=headers))


def test_expired_token_is_401(client: FlaskClient) -> None:
    expired = _claims(exp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    response = client.get(BALANCE, headers={"Authorization": f"Bearer {_token(expired)}"})
    _assert_unauthorized(response)
    assert "expired" in response.get_json()["error"]["message"]


def test_wrongly_signed_token_is_401(client: FlaskClient) -> None:
    forged = _token(_claims(), key="another-secret-" + "y" * 40)
    _assert_unauthorized(client.get(BALANCE, headers={"Authorization": f"Bearer {forged}"}))


def test_alg_none_token_is_401(client: FlaskClient) -> None:
    token = _unsigned(_claims(role="admin"))
    _assert_unauthorized(client.get(BALANCE, headers={"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize("claim", ["exp", "sub"])
def test_token_without_required_claim_is_401(client: FlaskClient, claim: str) -> None:
    claims = _claims()
    del claims[claim]
    _assert_unauthorized(client.get(BALANCE, headers={"Authorization": f"Bearer {_token(claims)}"}))


def test_token_with_non_uuid_org_is_401(client: FlaskClient) -> None:
    token = _token(_claims(org_id="acme"))
    _assert_unauthorized(client.get(BALANCE, headers={"Authorization": f"Bearer {token}"}))


def test_token_without_role_is_a_member(client: FlaskClient) -> None:
    claims = _claims()
    response = client.get(BALANCE, headers={"Authorization": f"Bearer {_token(claims)}"})
    assert response.status_code == 200
    response = client.post("/api/billing/add-funds", json={"amount": 10},
                           headers={"Authorization": f"Bearer {_token(claims)}"})
    assert response.status_code == 403


def test_unknown_role_is_403(client: FlaskClient) -> None:
    token = _token(_claims(role="superadmin"))
    response = client.get(BALANCE, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


ADD_FUNDS_ALLOWED = {"member": 403, "service": 403, "admin": 201}


@pytest.mark.parametrize("role", sorted(ADD_FUNDS_ALLOWED))
def test_only_admins_add_funds(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                               role: str) -> None:
    response = client.post("/api/billing/add-funds", headers=auth(role, org),
                           json={"amount": 10, "orgId": str(org)})
    assert response.status_code == ADD_FUNDS_ALLOWED[role]
    balance = client.get(BALANCE, headers=auth("member", org)).get_json()["balance"]
    assert balance == (10 if role == "admin" else 0)


@pytest.mark.parametrize("path", [BALANCE, "/api/billing/transactions"])
@pytest.mark.parametrize("role", ["member", "admin", "service"])
def test_every_role_reads_its_org(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                  role: str, path: str) -> None:
    assert client.get(path, headers=auth(role, org)).status_code == 200


@pytest.mark.parametrize("path", [BALANCE, "/api/billing/transactions"])
def test_member_cannot_name_another_org(client: FlaskClient, auth: TokenFactory,
                                        org: uuid.UUID, other_org: uuid.UUID, path: str) -> None:
    response = client.get(f"{path}?orgId={other_org}", headers=auth("member", org))
    assert response.status_code == 403


@pytest.mark.parametrize("role", ["admin", "service"])
def test_admin_and_service_read_any_org(client: FlaskClient, auth: TokenFactory, credit,
                                        org: uuid.UUID, role: str) -> None:
    credit(org, "12.34")
    response = client.get(f"{BALANCE}?orgId={org}", headers=auth(role))
    assert response.get_json()["balance"] == Decimal("12.34")
    assert response.get_data(as_text=True).startswith('{"balance":12.34,')


def test_admin_without_org_must_name_one(client: FlaskClient, auth: TokenFactory) -> None:
    response = client.get(BALANCE, headers=auth("admin"))
    assert response.status_code == 400
    assert "orgId" in response.get_json()["error"]["fields"]


def test_member_token_without_org_is_403(client: FlaskClient, auth: TokenFactory) -> None:
    assert client.get(BALANCE, headers=auth("member")).status_code == 403


def test_claim_names_are_configurable(settings: Settings) -> None:
    custom = settings.with_overrides(jwt_org_claim="app_metadata.org",
                                     jwt_role_claim="app_metadata.billing_role")
    app = create_app(custom)
    org = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    token = _token({"sub": "u1", "exp": now + dt.timedelta(minutes=5),
                    "app_metadata": {"org": str(org), "billing_role": "admin"}})
    try:
        client = app.test_client()
        response = client.post("/api/billing/add-funds", json={"amount": 1},
                               headers={"Authorization": f"Bearer {token}"})
    finally:
        app.extensions["billing_pool"].close()
    assert response.status_code == 201


def test_audience_and_issuer_are_checked_when_configured(settings: Settings) -> None:
    strict = settings.with_overrides(jwt_audience="billing", jwt_issuer="https://idp.example")
    app = create_app(strict)
    good = _token(_claims(aud="billing", iss="https://idp.example"))
    wrong_aud = _token(_claims(aud="other", iss="https://idp.example"))
    no_iss = _token(_claims(aud="billing"))
    try:
        client = app.test_client()
        statuses = [client.get(BALANCE, headers={"Authorization": f"Bearer {t}"}).status_code
                    for t in (good, wrong_aud, no_iss)]
    finally:
        app.extensions["billing_pool"].close()
    assert statuses == [200, 401, 401]


def test_rs256_tokens_verify_with_the_public_key(settings: Settings) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    app = create_app(settings.with_overrides(jwt_algorithm="RS256", jwt_public_key=public_pem,
                                             jwt_secret=None))
    good = jwt.encode(_claims(), private, algorithm="RS256")
    # The classic confusion attack: HS256 signed with the public key as the HMAC secret.
    confused = _hmac_signed(_claims(role="admin"), public_pem.encode())
    try:
        client = app.test_client()
        statuses = [client.get(BALANCE, headers={"Authorization": f"Bearer {t}"}).status_code
                    for t in (good, confused, _token(_claims()))]
    finally:
        app.extensions["billing_pool"].close()
    assert statuses == [200, 401, 401]
