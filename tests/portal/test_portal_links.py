"""POST /api/billing/portal-sessions and the links it makes: once, for minutes, stored hashed,
opening a cookie session that only the page accepts."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from tests.plugins.service import TokenFactory
from tests.portal.conftest import LINKS, SignIn, csrf_token, portal_link


def test_member_gets_a_one_time_link_to_its_page(client: FlaskClient, auth: TokenFactory,
                                                 org: uuid.UUID, settings: Settings,
                                                 owner_conn: psycopg.Connection) -> None:
    response = client.post(LINKS, headers=auth("member", org),
                           json={"returnUrl": "https://app.example.com/settings"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert set(body) == {"url", "expiresAt"}
    assert body["url"].startswith(f"{settings.public_url}/billing/portal/")
    token = body["url"].rsplit("/", 1)[1]
    assert len(token) >= 43  # 256 random bits
    stored = owner_conn.execute(
        "SELECT token_hash, org_id, member, return_url, expires_at - created_at,"
        " to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        " FROM portal_links").fetchall()
    assert len(stored) == 1
    token_hash, org_id, member, return_url, lifetime, expires = stored[0]
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()  # only the hash is kept
    assert (org_id, member, return_url) == (org, "test-member", "https://app.example.com/settings")
    assert lifetime.total_seconds() == settings.portal_link_ttl
    assert body["expiresAt"].startswith(expires)


def test_member_cannot_get_a_link_to_another_org(client: FlaskClient, auth: TokenFactory,
                                                 org: uuid.UUID, other_org: uuid.UUID) -> None:
    response = client.post(LINKS, headers=auth("member", org), json={"orgId": str(other_org)})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"


def test_admin_and_service_name_the_org(client: FlaskClient, auth: TokenFactory,
                                        org: uuid.UUID) -> None:
    for role in ("admin", "service"):
        assert client.post(LINKS, headers=auth(role), json={}).status_code == 400
        named = client.post(LINKS, headers=auth(role), json={"orgId": str(org)})
        assert named.status_code == 201, named.get_json()


def test_a_link_needs_a_token_and_a_web_return_url(client: FlaskClient, auth: TokenFactory,
                                                   org: uuid.UUID) -> None:
    assert client.post(LINKS, json={}).status_code == 401
    for bad in ("javascript:alert(1)", "data:text/html,hi", "ftp://x.example", "not a url",
                "https://" + "a" * 2100 + ".example"):
        response = client.post(LINKS, headers=auth("member", org), json={"returnUrl": bad})
        assert response.status_code == 400, bad
        assert "returnUrl" in response.get_json()["error"]["fields"]


def test_opening_a_link_starts_a_page_session_with_a_strict_cookie(
        app: Flask, client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> None:
    link = portal_link(client, auth, org)
    browser = app.test_client()
    opened = browser.get(link)
    assert opened.status_code == 303
    assert opened.headers["Location"] == "/billing"
    cookie = opened.headers["Set-Cookie"]
    assert cookie.startswith("billing_session=")
    for attribute in ("HttpOnly", "SameSite=Lax", "Path=/billing"):
        assert attribute in cookie
    assert "Secure" not in cookie  # BILLING_PUBLIC_URL is http here
    assert browser.get("/billing").status_code == 200


def test_cookie_is_secure_when_the_public_url_is_https(settings: Settings, auth: TokenFactory,
                                                       org: uuid.UUID) -> None:
    https_app = create_app(settings.with_overrides(public_url="https://billing.example.com"))
    try:
        link = portal_link(https_app.test_client(), auth, org)
        opened = https_app.test_client().get(link)
        assert opened.status_code == 303
        assert "Secure" in opened.headers["Set-Cookie"]
    finally:
        https_app.extensions["billing_pool"].close()


def test_a_link_works_once(app: Flask, client: FlaskClient, auth: TokenFactory,
                           org: uuid.UUID) -> None:
    link = portal_link(client, auth, org)
    assert app.test_client().get(link).status_code == 303
    again = app.test_client().get(link)
    assert again.status_code == 410
    assert again.mimetype == "text/html"
    assert "already been used" in again.get_data(as_text=True)
    assert "Set-Cookie" not in again.headers


def test_an_expired_or_unknown_link_is_a_clear_page(app: Flask, client: FlaskClient,
                                                    auth: TokenFactory, org: uuid.UUID,
                                                    owner_conn: psycopg.Connection) -> None:
    link = portal_link(client, auth, org)
    owner_conn.execute("UPDATE portal_links SET created_at = now() - interval '10 minutes',"
                       " expires_at = now() - interval '1 second'")
    expired = app.test_client().get(link)
    assert expired.status_code == 410
    assert "has expired" in expired.get_data(as_text=True)
    unknown = app.test_client().get("/billing/portal/" + "x" * 43)
    assert unknown.status_code == 404
    assert unknown.mimetype == "text/html"
    assert "not valid" in unknown.get_data(as_text=True)


def test_two_browsers_racing_for_one_link_get_one_session(
        app: Flask, client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    from concurrent.futures import ThreadPoolExecutor

    link = portal_link(client, auth, org)
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: app.test_client().get(link).status_code, range(8)))
    assert statuses == [303] + [410] * 7
    assert owner_conn.execute("SELECT count(*) FROM portal_sessions").fetchone() == (1,)


def test_an_idle_session_ends(sign_in: SignIn, org: uuid.UUID,
                              owner_conn: psycopg.Connection, settings: Settings) -> None:
    browser = sign_in(org)
    assert browser.get("/billing").status_code == 200
    owner_conn.execute("UPDATE portal_sessions SET last_seen_at = now() - %s * interval '1 second'",
                       (settings.portal_idle_timeout + 1,))
    ended = browser.get("/billing")
    assert ended.status_code == 401
    assert ended.mimetype == "text/html"
    assert "session has ended" in ended.get_data(as_text=True)


def test_a_session_is_used_again_within_the_idle_time(sign_in: SignIn, org: uuid.UUID,
                                                      owner_conn: psycopg.Connection,
                                                      settings: Settings) -> None:
    browser = sign_in(org)
    owner_conn.execute("UPDATE portal_sessions SET last_seen_at = now() - %s * interval '1 second'",
                       (settings.portal_idle_timeout - 60,))
    assert browser.get("/billing").status_code == 200
    assert browser.get("/billing").status_code == 200  # the first visit renewed it


def test_sign_out_ends_the_session(sign_in: SignIn, org: uuid.UUID,
                                   owner_conn: psycopg.Connection) -> None:
    browser = sign_in(org)
    page = browser.get("/billing").get_data(as_text=True)
    out = browser.post("/billing/sign-out", data={"csrf_token": csrf_token(page)})
    assert out.status_code == 200
    assert "signed out" in out.get_data(as_text=True)
    assert owner_conn.execute(
        "SELECT count(*) FROM portal_sessions WHERE ended_at IS NOT NULL").fetchone() == (1,)
    assert browser.get("/billing").status_code == 401


def test_sign_out_needs_the_csrf_token(sign_in: SignIn, org: uuid.UUID) -> None:
    browser = sign_in(org)
    refused = browser.post("/billing/sign-out")
    assert refused.status_code == 400
    assert refused.mimetype == "text/html"
    assert browser.get("/billing").status_code == 200  # still signed in


def test_the_json_api_refuses_the_page_cookie(sign_in: SignIn, org: uuid.UUID) -> None:
    browser = sign_in(org)
    assert browser.get("/billing").status_code == 200
    for path in ("/api/billing/balance", "/api/billing/transactions"):
        # Sent even where a browser would not (the cookie's path is /billing).
        browser.set_cookie("billing_session", browser.get_cookie(
            "billing_session", path="/billing").value, path="/")  # type: ignore[union-attr]
        refused = browser.get(path)
        assert refused.status_code == 401
        assert refused.get_json()["error"]["code"] == "unauthorized"


def test_the_page_refuses_a_bearer_token(app: Flask, auth: TokenFactory, org: uuid.UUID) -> None:
    for role in ("member", "admin"):
        refused = app.test_client().get("/billing", headers=auth(role, org))
        assert refused.status_code == 401
        assert refused.mimetype == "text/html"
        assert 'id="balance"' not in refused.get_data(as_text=True)
