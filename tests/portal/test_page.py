"""GET /billing and its forms through a browser-like client: balance, history, banners, add
funds through Checkout (Stripe stubbed with responses), CSRF, headers and HTML errors."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver
from tests.portal.conftest import SignIn, attempt, csrf_token

STRIPE_SESSIONS = "https://api.stripe.com/v1/checkout/sessions"
STRIPE_CUSTOMERS = "https://api.stripe.com/v1/customers"


class _Page(HTMLParser):
    """The parts of the page the contract names, and every tag, for the CSP checks."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.ids: dict[str, dict[str, str | None]] = {}
        self.rows: list[dict[str, str | None]] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, str] = {}
        self._open: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if found.get("id"):
            self.ids[str(found["id"])] = found
            self._open.append(str(found["id"]))
            self.text.setdefault(str(found["id"]), "")
        if tag == "tr" and "data-type" in found:
            self.rows.append(found)

    def handle_endtag(self, tag: str) -> None:
        pass

    def handle_data(self, data: str) -> None:
        for element in self._open:
            self.text[element] += data


def _page(browser: FlaskClient, query: str = "") -> tuple[_Page, str]:
    response = browser.get(f"/billing{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    html = response.get_data(as_text=True)
    return _Page(html), html


def _text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>(.*?)</', html, re.S)
    assert match, element_id
    return " ".join(match.group(1).split())


def _column(html: str, css_class: str) -> list[str]:
    """The history's cells of one column (by class), top to bottom, as text."""
    return [" ".join(cell.split()) for cell in
            re.findall(rf'<td class="[^"]*\b{css_class}\b[^"]*">(.*?)</td>', html, re.S)]


def _charge(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, sms: int) -> None:
    """Charge `sms` messages at 0.0075 each, as the SMS sender does."""
    charged = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": sms, "costPerSms": "0.0075",
        "messageId": f"m-{uuid.uuid4()}"})
    assert charged.status_code == 201, charged.get_json()


Credit = Callable[..., dict]


def test_page_shows_the_balance_and_the_add_funds_form(sign_in: SignIn, org: uuid.UUID,
                                                       credit: Credit) -> None:
    credit(org, "52.88")
    page, html = _page(sign_in(org))
    assert _text_of(html, "balance") == "$52.88"
    form = page.ids["add-funds"]
    assert form["method"] == "post" and form["action"] == "/billing/add-funds"
    quick = [attrs["data-amount"] for tag, attrs in page.tags
             if tag == "button" and "data-amount" in attrs]
    assert quick == ["10.00", "25.00", "50.00", "100.00", "250.00"]
    assert "amount" in page.ids and page.ids["amount"]["name"] == "amount"
    assert re.search(r'<label for="amount">', html)  # the custom amount has its label
    assert "low-balance" not in page.ids


def test_a_sub_cent_balance_is_shown_exactly_beside_the_formatted_one(
        sign_in: SignIn, org: uuid.UUID, credit: Credit, client: FlaskClient,
        auth: TokenFactory) -> None:
    credit(org, "1500.00")
    _charge(client, auth, org, 85)  # 0.6375: the ledger holds 1499.3625
    page, html = _page(sign_in(org))
    assert _text_of(html, "balance") == "$1499.36"  # the API's `formatted` (the contract)
    assert _text_of(html, "balance-exact").startswith("Exactly $1,499.3625")
    assert page.ids["balance"]["data-amount"] == "1499.3625"
    assert _column(html, "col-after") == ["$1,499.3625", "$1,500.00"]
    assert _column(html, "amount") == ["\u2212$0.6375", "+$1,500.00"]


def test_sms_counts_are_grouped_in_thousands(sign_in: SignIn, org: uuid.UUID, credit: Credit,
                                             client: FlaskClient, auth: TokenFactory) -> None:
    credit(org, "100.00")
    _charge(client, auth, org, 1200)
    _charge(client, auth, org, 3725)
    _, html = _page(sign_in(org))
    assert _column(html, "col-sms") == ["3,725", "1,200", ""]
    assert ("$36.9375 spent on 4,925 SMS in the last 30 days; busiest day $36.9375."
            in " ".join(html.split()))
    assert _text_of(html, "balance") == "$63.06"
    assert _text_of(html, "balance-exact").startswith("Exactly $63.0625")


def test_low_balance_banner_below_the_default_threshold(sign_in: SignIn, org: uuid.UUID,
                                                        credit: Credit) -> None:
    credit(org, "4.99")
    page, html = _page(sign_in(org))
    assert "low-balance" in page.ids
    assert "$5.00" in _text_of(html, "low-balance") + html[html.index('id="low-balance"'):][:300]


def test_history_pages_twenty_newest_first_with_signed_amounts(
        sign_in: SignIn, org: uuid.UUID, credit: Credit, client: FlaskClient,
        auth: TokenFactory) -> None:
    credit(org, "100.00")
    for n in range(24):
        charged = client.post("/api/billing/deduct", headers=auth("service"), json={
            "orgId": str(org), "smsCount": 1, "costPerSms": "0.0075", "messageId": f"m-{n}"})
        assert charged.status_code == 201, charged.get_json()
    browser = sign_in(org)
    api = client.get("/api/billing/transactions?limit=20", headers=auth("member", org))
    expected = [(t["type"], Decimal(str(t["amount"]))) for t in api.get_json()["transactions"]]
    first, html = _page(browser)
    assert [(r["data-type"], Decimal(str(r["data-amount"]))) for r in first.rows] == expected
    assert first.rows[0]["data-amount"] == "-0.0075"
    assert "\u2212$0.0075" in html  # signed, exact to the cent-fraction
    assert first.ids["next-page"]["href"] == "/billing?page=2"
    assert "href" not in first.ids["prev-page"]
    second, _ = _page(browser, "?page=2")
    assert [r["data-type"] for r in second.rows] == ["sms_send"] * 4 + ["purchase"]
    assert "href" not in second.ids["next-page"]
    assert second.ids["prev-page"]["href"] == "/billing?page=1"


def test_type_filter_shows_one_type(sign_in: SignIn, org: uuid.UUID, credit: Credit) -> None:
    credit(org, "10.00")
    credit(org, "2.00", type="bonus")
    page, _ = _page(sign_in(org), "?type=bonus")
    assert [r["data-type"] for r in page.rows] == ["bonus"]
    assert page.ids["type-filter"]["name"] == "type"
    unknown, _ = _page(sign_in(org), "?type=nonsense&page=abc")  # ignored, not an error
    assert len(unknown.rows) == 2


def test_a_member_sees_only_its_own_org(sign_in: SignIn, org: uuid.UUID,
                                        other_org: uuid.UUID, credit: Credit) -> None:
    credit(org, "11.00")
    credit(other_org, "22.00")
    mine, other = sign_in(org), sign_in(other_org)
    page_a, html_a = _page(mine)
    page_b, html_b = _page(other)
    assert _text_of(html_a, "balance") == "$11.00"
    assert _text_of(html_b, "balance") == "$22.00"
    assert [r["data-amount"] for r in page_a.rows] == ["11.00"]
    assert [r["data-amount"] for r in page_b.rows] == ["22.00"]


def test_page_headers_forbid_inline_code_and_framing(sign_in: SignIn, org: uuid.UUID) -> None:
    response = sign_in(org).get("/billing")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert "form-action 'self' https://checkout.stripe.com" in policy
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = _Page(response.get_data(as_text=True))
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts and all(s.get("src", "").startswith("/billing/static/") for s in scripts)
    assert not [attrs for _, attrs in page.tags
                if "style" in attrs or any(name.startswith("on") for name in attrs)]
    assert not [attrs for tag, attrs in page.tags
                if tag == "link" and not str(attrs.get("href")).startswith("/billing/static/")]


def test_frame_ancestors_come_from_the_setting(settings, auth: TokenFactory,  # type: ignore[no-untyped-def]
                                               org: uuid.UUID) -> None:
    from billing_gateway import create_app
    from tests.portal.conftest import portal_link

    embedded = create_app(settings.with_overrides(
        frame_ancestors="https://app.example.com"))
    try:
        browser = embedded.test_client()
        browser.get(portal_link(embedded.test_client(), auth, org))
        response = browser.get("/billing")
        assert "frame-ancestors https://app.example.com" in response.headers[
            "Content-Security-Policy"]
        assert "X-Frame-Options" not in response.headers
    finally:
        embedded.extensions["billing_pool"].close()


def _stub_session(stripe_api: responses.RequestsMock, org: uuid.UUID, cents: int) -> dict:
    session = so.checkout_session(org=org, amount_total=cents, status="open",
                                  payment_status="unpaid")
    stripe_api.add(responses.POST, STRIPE_SESSIONS, json=session)
    return session


def test_quick_amount_creates_a_checkout_session_and_goes_to_stripe(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    session = _stub_session(stripe_api, org, 2500)
    browser = sign_in(org)
    _, html = _page(browser)
    sent = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "25", "amount": ""})
    assert sent.status_code == 303
    assert sent.headers["Location"] == session["url"]
    form = parse_qs(stripe_api.calls[0].request.body)  # type: ignore[arg-type]
    assert form["line_items[0][price_data][unit_amount]"] == ["2500"]
    assert form["metadata[org_id]"] == [str(org)]
    assert owner_conn.execute(
        "SELECT r.status, s.amount, s.created_by FROM checkout_requests r"
        " JOIN checkout_sessions s ON s.id = r.session_id").fetchall() == [
        ("created", 25, f"member-of-{org}")]


def test_same_form_sent_twice_reuses_the_stripe_key(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    _stub_session(stripe_api, org, 4000)
    _stub_session(stripe_api, org, 4000)
    browser = sign_in(org)
    _, html = _page(browser)
    form = {"csrf_token": csrf_token(html), "attempt": attempt(html), "amount": "40.00"}
    assert browser.post("/billing/add-funds", data=form).status_code == 303
    assert browser.post("/billing/add-funds", data=form).status_code == 303
    keys = {call.request.headers["Idempotency-Key"] for call in stripe_api.calls}
    assert len(stripe_api.calls) == 2 and len(keys) == 1


def test_a_custom_amount_may_be_written_as_the_page_writes_it(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    _stub_session(stripe_api, org, 125000)
    browser = sign_in(org)
    _, html = _page(browser)
    sent = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "amount": "$1,250.00"})
    assert sent.status_code == 303
    form = parse_qs(stripe_api.calls[0].request.body)  # type: ignore[arg-type]
    assert form["line_items[0][price_data][unit_amount]"] == ["125000"]


def _stub_customer(stripe_api: responses.RequestsMock, org: uuid.UUID) -> str:
    made = {"id": "cus_Page0001", "object": "customer", "metadata": {
        "source": "billing-gateway", "org_id": str(org)}}
    stripe_api.add(responses.POST, STRIPE_CUSTOMERS, json=made)
    stripe_api.add(responses.GET, f"{STRIPE_CUSTOMERS}/cus_Page0001", json=made)
    return "cus_Page0001"


def _sent(stripe_api: responses.RequestsMock, url: str) -> list[responses.Call]:
    return [call for call in stripe_api.calls if call.request.url == url]


def _form(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)  # type: ignore[arg-type]  # the SDK sends a form


def test_the_save_card_box_is_offered_unticked_before_any_amount(
        sign_in: SignIn, org: uuid.UUID) -> None:
    page, html = _page(sign_in(org))
    box = page.ids["save-card"]
    assert (box["type"], box["name"], box["value"]) == ("checkbox", "save_card", "yes")
    assert "checked" not in box
    assert '<label for="save-card">Save this card for automatic top-ups</label>' in html
    assert box["aria-describedby"] == "save-card-help"
    assert "only for automatic top-ups you turn on" in _text_of(html, "save-card-help")
    # Inside the form and before its first button: every quick amount sends the form.
    tags = [attrs for _, attrs in page.tags]
    form = tags.index(page.ids["add-funds"])
    first_button = next(n for n, (tag, _) in enumerate(page.tags) if tag == "button" and n > form)
    assert form < tags.index(box) < first_button


def test_a_ticked_box_saves_the_card_to_the_orgs_customer(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    customer = _stub_customer(stripe_api, org)
    session = _stub_session(stripe_api, org, 2500)
    browser = sign_in(org)
    _, html = _page(browser)
    sent = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "25",
        "save_card": "yes"})
    assert sent.status_code == 303
    assert sent.headers["Location"] == session["url"]
    assert len(_sent(stripe_api, STRIPE_CUSTOMERS)) == 1
    [created] = _sent(stripe_api, STRIPE_SESSIONS)
    form = _form(created)
    assert form["customer"] == [customer]
    assert form["payment_intent_data[setup_future_usage]"] == ["off_session"]
    assert form["line_items[0][price_data][unit_amount]"] == ["2500"]
    assert owner_conn.execute("SELECT customer_id FROM stripe_customers WHERE org_id = %s",
                              (org,)).fetchall() == [(customer,)]


def test_an_unticked_box_saves_no_card(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    _stub_customer(stripe_api, org)
    _stub_session(stripe_api, org, 2500)
    browser = sign_in(org)
    _, html = _page(browser)
    for box in ("", "on"):  # not sent, or not the form's own value: not ticked
        form = {"csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "25"}
        if box:
            form["save_card"] = box
        assert browser.post("/billing/add-funds", data=form).status_code == 303
    assert _sent(stripe_api, STRIPE_CUSTOMERS) == []
    for created in _sent(stripe_api, STRIPE_SESSIONS):
        sent = _form(created)
        assert "customer" not in sent
        assert "payment_intent_data[setup_future_usage]" not in sent
    assert owner_conn.execute("SELECT count(*) FROM stripe_customers WHERE org_id = %s",
                              (org,)).fetchone() == (0,)


def test_ticking_the_box_is_another_stripe_key_for_the_same_form(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    _stub_customer(stripe_api, org)
    _stub_session(stripe_api, org, 4000)
    browser = sign_in(org)
    _, html = _page(browser)
    form = {"csrf_token": csrf_token(html), "attempt": attempt(html), "amount": "40.00"}
    for ticked in ("yes", "yes", None):
        sent = {**form, "save_card": ticked} if ticked else form
        assert browser.post("/billing/add-funds", data=sent).status_code == 303
    keys = [call.request.headers["Idempotency-Key"]
            for call in _sent(stripe_api, STRIPE_SESSIONS)]
    # Resent with the box: the same session; without it, Stripe is asked for another.
    assert len(keys) == 3 and keys[0] == keys[1] != keys[2]


def test_a_refused_amount_keeps_the_box_as_it_was(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    browser = sign_in(org)
    _, html = _page(browser)
    for ticked in (True, False):
        form = {"csrf_token": csrf_token(html), "attempt": attempt(html), "amount": "4.99"}
        refused = browser.post("/billing/add-funds",
                               data={**form, "save_card": "yes"} if ticked else form)
        assert refused.status_code == 400
        shown = _Page(refused.get_data(as_text=True))
        assert ("checked" in shown.ids["save-card"]) is ticked
        assert shown.ids["amount"]["value"] == "4.99"
    assert len(stripe_api.calls) == 0  # not even the Customer
    assert owner_conn.execute("SELECT count(*) FROM checkout_requests").fetchone() == (0,)


def test_stripe_down_keeps_the_box_ticked(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    _stub_customer(stripe_api, org)
    stripe_api.add(responses.POST, STRIPE_SESSIONS, status=400, json={"error": {
        "type": "invalid_request_error", "message": "No such price"}})
    browser = sign_in(org)
    _, html = _page(browser)
    failed = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "50",
        "save_card": "yes"})
    assert failed.status_code == 502
    assert "checked" in _Page(failed.get_data(as_text=True)).ids["save-card"]


@pytest.mark.parametrize(("amount", "message"), [
    ("4.99", "Choose an amount from $5.00 to $10,000.00."),
    ("10000.01", "Choose an amount from $5.00 to $10,000.00."),
    ("12.345", "Use whole cents"),
    ("ten", "is not an amount"),
    ("1,5", "is not an amount"),  # a decimal comma is not a thousands separator
    ("10,00.00", "is not an amount"),
    ("", "Enter an amount"),
    ("1e400", "Choose an amount from"),
    ("-25", "Choose an amount from"),
])
def test_custom_amount_is_checked_and_creates_nothing(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection, amount: str, message: str) -> None:
    browser = sign_in(org)
    _, html = _page(browser)
    refused = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "amount": amount})
    assert refused.status_code == 400
    shown = refused.get_data(as_text=True)
    assert message in _text_of(shown, "add-funds-error")
    assert 'aria-invalid="true"' in shown
    assert len(stripe_api.calls) == 0
    assert owner_conn.execute("SELECT count(*) FROM checkout_requests").fetchone() == (0,)


def test_add_funds_without_the_csrf_token_is_refused(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    browser = sign_in(org)
    _, html = _page(browser)
    for token in (None, "forged", csrf_token(html)[:-2] + "xx"):
        data = {"quick": "25", "attempt": attempt(html)}
        if token is not None:
            data["csrf_token"] = token
        refused = browser.post("/billing/add-funds", data=data)
        assert refused.status_code == 400
        assert refused.mimetype == "text/html"
        assert "could not be sent" in refused.get_data(as_text=True)
    assert len(stripe_api.calls) == 0
    assert owner_conn.execute("SELECT count(*) FROM checkout_requests").fetchone() == (0,)


def test_another_sessions_csrf_token_is_refused(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    _, other_html = _page(sign_in(org))
    browser = sign_in(org)
    _, html = _page(browser)
    refused = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(other_html), "attempt": attempt(html), "quick": "25"})
    assert refused.status_code == 400
    assert len(stripe_api.calls) == 0


def test_stripe_down_is_a_message_on_the_page(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock) -> None:
    stripe_api.add(responses.POST, STRIPE_SESSIONS, status=400, json={"error": {
        "type": "invalid_request_error", "message": "No such price"}})
    browser = sign_in(org)
    _, html = _page(browser)
    failed = browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "50"})
    assert failed.status_code == 502
    assert "Nothing was charged" in _text_of(failed.get_data(as_text=True), "add-funds-error")


def test_return_from_checkout_says_processing_then_credits_added(
        sign_in: SignIn, org: uuid.UUID, stripe_api: responses.RequestsMock,
        client: FlaskClient) -> None:
    session = _stub_session(stripe_api, org, 2500)
    browser = sign_in(org)
    _, html = _page(browser)
    browser.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "25"})
    back = f"?success=true&session_id={session['id']}"
    page, html = _page(browser, back)
    assert page.ids["payment-status"]["data-state"] == "processing"
    assert "processing" in _text_of(html, "payment-status").lower()
    status = browser.get(f"/billing/payment-status?session_id={session['id']}")
    assert status.get_json() == {"state": "processing"}

    intent = so.payment_intent(org=org, amount=2500)
    paid = so.checkout_session(org=org, amount_total=2500, session_id=session["id"],
                               payment_intent=intent["id"])
    assert deliver(client, so.event("checkout.session.completed", paid)).status_code == 200
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200

    assert browser.get(f"/billing/payment-status?session_id={session['id']}").get_json() == {
        "state": "credited"}
    page, html = _page(browser, back)
    assert page.ids["payment-status"]["data-state"] == "credited"
    assert "credits added" in _text_of(html, "payment-status")
    assert "$25.00" in html[html.index('id="payment-status"'):][:400]
    assert _text_of(html, "balance") == "$25.00"


def test_another_orgs_session_is_not_reported(
        sign_in: SignIn, org: uuid.UUID, other_org: uuid.UUID,
        stripe_api: responses.RequestsMock) -> None:
    session = _stub_session(stripe_api, other_org, 2500)
    other = sign_in(other_org)
    _, html = _page(other)
    other.post("/billing/add-funds", data={
        "csrf_token": csrf_token(html), "attempt": attempt(html), "quick": "25"})
    mine = sign_in(org)
    assert mine.get(f"/billing/payment-status?session_id={session['id']}").get_json() == {
        "state": "unknown"}


def test_cancel_url_says_canceled(sign_in: SignIn, org: uuid.UUID) -> None:
    page, html = _page(sign_in(org), "?canceled=true")
    assert page.ids["payment-status"]["data-state"] == "canceled"
    assert "canceled" in _text_of(html, "payment-status").lower()


def test_errors_under_billing_are_pages_and_the_api_keeps_json(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient) -> None:
    browser = sign_in(org)
    missing = browser.get("/billing/no-such-page")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    assert "Content-Security-Policy" in missing.headers
    wrong_method = browser.put("/billing")
    assert wrong_method.status_code == 405 and wrong_method.mimetype == "text/html"
    api = client.get("/api/billing/no-such-thing")
    assert api.status_code == 404 and api.get_json()["error"]["code"] == "not_found"


def test_the_page_csv_is_the_api_csv(sign_in: SignIn, org: uuid.UUID, credit: Credit,
                                     client: FlaskClient, auth: TokenFactory) -> None:
    credit(org, "10.00")
    credit(org, "2.50", type="bonus", description="=HYPERLINK(\"x\")")
    browser = sign_in(org)
    page = browser.get("/billing/transactions.csv")
    api = client.get("/api/billing/transactions.csv", headers=auth("member", org))
    assert page.status_code == api.status_code == 200
    assert page.mimetype == "text/csv"
    assert page.get_data() == api.get_data()
    assert len(page.get_data(as_text=True).strip().splitlines()) == 3  # header and two rows
    bonus_only = browser.get("/billing/transactions.csv?type=bonus").get_data(as_text=True)
    assert len(bonus_only.strip().splitlines()) == 2 and "'=HYPERLINK" in bonus_only
    assert browser.get("/api/billing/transactions.csv").status_code == 401  # no cookie there


def test_spend_chart_draws_the_usage_summary(sign_in: SignIn, org: uuid.UUID, credit: Credit,
                                             client: FlaskClient, auth: TokenFactory) -> None:
    credit(org, "100.00")
    for n in range(3):
        client.post("/api/billing/deduct", headers=auth("service"), json={
            "orgId": str(org), "smsCount": 100, "costPerSms": "0.0075", "messageId": f"c-{n}"})
    summary = client.get("/api/billing/usage/summary?groupBy=day",
                         headers=auth("member", org)).get_json()
    page, html = _page(sign_in(org))
    bars = [attrs for tag, attrs in page.tags if tag == "rect"]
    assert [b["data-date"] for b in bars] == [item["date"] for item in summary["items"]]
    assert len(bars) == 30
    assert Decimal(str(bars[-1]["data-amount"])) == Decimal("2.25")
    assert [float(b["height"]) for b in bars[:-1]] == [0.0] * 29  # type: ignore[arg-type]
    assert "$2.25 spent on 300 SMS in the last 30 days" in " ".join(html.split())


def test_spend_chart_says_when_there_was_no_spend(sign_in: SignIn, org: uuid.UUID) -> None:
    _, html = _page(sign_in(org))
    assert "No SMS sent in the last 30 days." in html


def test_the_page_banner_follows_the_orgs_threshold(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, sign_in: SignIn,
        credit: Credit) -> None:
    credit(org, "20.00")
    browser = sign_in(org)
    assert 'id="low-balance"' not in browser.get("/billing").get_data(as_text=True)
    client.put(f"/api/billing/orgs/{org}/alerts", headers=auth("member", org),
               json={"lowBalanceThreshold": "25.00", "emails": []})
    page = browser.get("/billing").get_data(as_text=True)
    assert 'id="low-balance"' in page and "$25.00" in page
