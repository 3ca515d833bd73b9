"""Who the billing page lets in, in headless Chromium: a portal link works once, CSRF on the
add-funds form, the page's cookie and the API's bearer token never stand in for each other,
sign-out ends the session, and two orgs' customers each see only their own."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from tests.plugins.browser import (
    WAIT_SECONDS,
    BrowserFactory,
    LiveGateway,
    checkout_requests,
    cookie_session,
    open_billing_page,
)

pytestmark = pytest.mark.browser


def is_html_refusal(answer: requests.Response, statuses: tuple[int, ...]) -> bool:
    """An HTML error page (not the billing page, not JSON) with one of the statuses."""
    return (answer.status_code in statuses
            and answer.headers.get("Content-Type", "").startswith("text/html")
            and 'id="balance"' not in answer.text and "Traceback" not in answer.text)


def refused_in_browser(browser: Any) -> str:
    """Assert the browser shows no billing page; return the text it shows instead."""
    assert not browser.find_elements(By.ID, "balance"), browser.current_url
    text = str(browser.find_element(By.TAG_NAME, "body").text.strip())
    assert text, "an empty page instead of an explanation"
    return text


def add_funds_fields(browser: Any) -> tuple[str, dict[str, str]]:
    """The add-funds form's action and its hidden fields (the CSRF token among them)."""
    form = browser.find_element(By.ID, "add-funds")
    assert (form.get_attribute("method") or "").lower() == "post"
    hidden = {e.get_attribute("name"): e.get_attribute("value")
              for e in form.find_elements(By.CSS_SELECTOR, "input[type=hidden]")}
    return str(form.get_attribute("action")), hidden


def test_add_funds_without_the_csrf_token_is_refused(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    open_billing_page(browser, live_gateway, org)
    action, hidden = add_funds_fields(browser)
    # The token's field, by its usual name; else every hidden field is taken for it.
    token = [name for name in hidden if "csrf" in name.lower()] or list(hidden)
    assert token, "the add-funds form carries no hidden CSRF token"
    others = {name: value for name, value in hidden.items() if name not in token}
    with_cookie = cookie_session(browser)

    missing = with_cookie.post(action, data={**others, "amount": "25.00"},
                               allow_redirects=False, timeout=10)
    assert is_html_refusal(missing, (400, 403)), (missing.status_code, missing.text[:500])
    forged = with_cookie.post(action, data={**others, **dict.fromkeys(token, "forged"),
                                            "amount": "25.00"},
                              allow_redirects=False, timeout=10)
    assert is_html_refusal(forged, (400, 403)), (forged.status_code, forged.text[:500])
    assert checkout_requests(owner_conn, org) == 0
    assert live_gateway.sim_sessions(org) == []
    # The same POST with the page's own token goes through: the token made the difference.
    accepted = with_cookie.post(action, data={**hidden, "amount": "25.00"},
                                allow_redirects=False, timeout=10)
    assert accepted.status_code == 303, accepted.text[:500]
    assert accepted.headers["Location"].startswith(f"{live_gateway.sim_url}/pay/")
    assert checkout_requests(owner_conn, org) == 1


def test_the_form_without_its_token_is_refused_in_the_browser(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    open_billing_page(browser, live_gateway, org)
    form = browser.find_element(By.ID, "add-funds")
    # The token's field by its usual name, else every hidden field.
    browser.execute_script("""
        const hidden = [...arguments[0].querySelectorAll('input[type=hidden]')];
        const token = hidden.filter(e => e.name.toLowerCase().includes('csrf'));
        (token.length ? token : hidden).forEach(e => e.remove());""", form)
    browser.find_element(By.CSS_SELECTOR, "#add-funds [data-amount]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.staleness_of(form))
    assert browser.current_url.startswith(live_gateway.url)
    refused_in_browser(browser)
    assert checkout_requests(owner_conn, org) == 0
    assert live_gateway.sim_sessions(org) == []


def test_a_portal_link_works_once(live_gateway: LiveGateway,
                                  browser_factory: BrowserFactory, org: uuid.UUID) -> None:
    link = live_gateway.portal_link(org)
    first = browser_factory()
    first.get(link)
    WebDriverWait(first, WAIT_SECONDS).until(ec.presence_of_element_located((By.ID, "balance")))
    assert first.current_url == f"{live_gateway.url}/billing"

    second = browser_factory()
    second.get(link)
    text = refused_in_browser(second).lower()
    assert "link" in text and ("used" in text or "expired" in text), text
    again = requests.get(link, allow_redirects=False, timeout=10)
    assert is_html_refusal(again, (400, 403, 404, 410)), (again.status_code, again.text[:500])
    # The first customer's session is not disturbed by the refused second use.
    first.refresh()
    assert first.find_element(By.ID, "balance").text.strip() == "$0.00"


def test_an_unknown_portal_token_is_refused(live_gateway: LiveGateway, browser: Any) -> None:
    link = f"{live_gateway.url}/billing/portal/{uuid.uuid4().hex}"
    browser.get(link)
    refused_in_browser(browser)
    answer = requests.get(link, allow_redirects=False, timeout=10)
    assert is_html_refusal(answer, (400, 403, 404, 410)), (answer.status_code, answer.text[:500])


def test_two_orgs_each_see_only_their_own(live_gateway: LiveGateway,
                                          browser_factory: BrowserFactory, org: uuid.UUID,
                                          other_org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "11.00")
    live_gateway.charge(org, 3)
    live_gateway.add_funds(other_org, "22.00")
    ours, theirs = browser_factory(), browser_factory()
    open_billing_page(ours, live_gateway, org)
    open_billing_page(theirs, live_gateway, other_org)

    for browser, expected, rows in ((ours, "$10.97", [("sms_send", Decimal("-0.03")),
                                                      ("purchase", Decimal("11.00"))]),
                                    (theirs, "$22.00", [("purchase", Decimal("22.00"))])):
        browser.refresh()
        assert browser.find_element(By.ID, "balance").text.strip() == expected
        shown = [(r.get_attribute("data-type"), Decimal(r.get_attribute("data-amount")))
                 for r in browser.find_elements(By.CSS_SELECTOR, "#history tr[data-type]")]
        assert shown == rows
    # Naming the other org in the address changes nothing: the session's org is the org.
    ours.get(f"{live_gateway.url}/billing?orgId={other_org}&org_id={other_org}")
    assert ours.find_element(By.ID, "balance").text.strip() == "$10.97"


def test_the_csv_export_is_the_sessions_org_only(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID, other_org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "11.00")
    live_gateway.add_funds(other_org, "22.00")
    open_billing_page(browser, live_gateway, org)
    exported = cookie_session(browser).get(f"{live_gateway.url}/billing/transactions.csv",
                                           params={"orgId": str(other_org)}, timeout=10)
    assert exported.status_code == 200, exported.text[:500]
    ids = {row["id"] for row in csv.DictReader(io.StringIO(exported.text))}
    assert ids == {t["id"] for t in live_gateway.api(
        "GET", "/transactions", "member", org).json()["transactions"]}


def test_the_api_refuses_the_pages_cookie(live_gateway: LiveGateway, browser: Any,
                                          org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "5.00")
    open_billing_page(browser, live_gateway, org)
    with_cookie = cookie_session(browser)
    for path in ("/balance", "/transactions"):
        answer = with_cookie.get(f"{live_gateway.url}/api/billing{path}", timeout=10)
        assert answer.status_code == 401, (path, answer.status_code, answer.text[:300])
        assert answer.json()["error"]["code"] == "unauthorized"
    checkout = with_cookie.post(f"{live_gateway.url}/api/billing/create-checkout",
                                json={"amount": "25.00"}, timeout=10)
    assert checkout.status_code == 401 and checkout.json()["error"]["code"] == "unauthorized"


def test_the_api_csv_refuses_the_pages_cookie(live_gateway: LiveGateway, browser: Any,
                                              org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "5.00")
    open_billing_page(browser, live_gateway, org)
    with_cookie = cookie_session(browser)
    # The route exists for a bearer token, so the 401 below is about the cookie.
    assert live_gateway.api("GET", "/transactions.csv", "member", org).status_code == 200
    for query in ({}, {"orgId": str(org)}):
        exported = with_cookie.get(f"{live_gateway.url}/api/billing/transactions.csv",
                                   params=query, timeout=10)
        assert exported.status_code == 401, (exported.status_code, exported.text[:300])
        assert exported.json()["error"]["code"] == "unauthorized"


def test_the_page_refuses_a_bearer_token(live_gateway: LiveGateway, org: uuid.UUID) -> None:
    for path in ("/billing", "/billing/transactions.csv"):
        answer = requests.get(f"{live_gateway.url}{path}", allow_redirects=False, timeout=10,
                              headers=live_gateway.headers("member", org))
        assert is_html_refusal(answer, (401,)), (path, answer.status_code, answer.text[:500])
        # It says how to come back (sign in, or open Billing, again), not just "no".
        assert "again" in answer.text.lower(), answer.text[:500]
    nobody = requests.get(f"{live_gateway.url}/billing", allow_redirects=False, timeout=10)
    assert is_html_refusal(nobody, (401,)), (nobody.status_code, nobody.text[:500])


def test_sign_out_ends_the_session(live_gateway: LiveGateway, browser: Any,
                                   org: uuid.UUID) -> None:
    open_billing_page(browser, live_gateway, org)
    before = cookie_session(browser)
    assert before.get(f"{live_gateway.url}/billing", timeout=10).status_code == 200
    sign_out = browser.find_elements(By.XPATH, (
        "//*[self::button or self::a or self::input[@type='submit']][contains(translate("
        "normalize-space(concat(., @value)), 'SIGNOUT', 'signout'), 'sign out')]"))
    assert sign_out, "no sign-out control on the page"
    sign_out[0].click()
    WebDriverWait(browser, WAIT_SECONDS).until(
        lambda b: not b.find_elements(By.ID, "balance"))

    browser.get(f"{live_gateway.url}/billing")
    refused_in_browser(browser)
    # The old cookie is dead on the server, not just forgotten by this browser.
    after = before.get(f"{live_gateway.url}/billing", allow_redirects=False, timeout=10)
    assert is_html_refusal(after, (401,)), (after.status_code, after.text[:500])
