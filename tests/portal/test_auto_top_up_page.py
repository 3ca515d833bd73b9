"""The billing page's "Automatic top-up" section through a browser-like client: the saved card
and its removal (Stripe stubbed with responses), the settings form and its errors in the
customer's words, the last attempt and its outcome (run as the worker runs it), and a pause
with its "Pay now" Checkout."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from billing_gateway.platform.config import Settings
from billing_gateway.portal import auto_top_up
from tests import stripe_objects as so
from tests.autotopup.conftest import (
    AUTO_TOP_UP,
    STRIPE,
    attempts_of,
    charge,
    save_card,
    turn_on,
)
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver
from tests.portal.conftest import SignIn, csrf_token

INTENTS = f"{STRIPE}/payment_intents"
SESSIONS = f"{STRIPE}/checkout/sessions"
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}
# What the API says and the customer should never read on the page.
_JARGON = ("BILLING_", "saveCard", "targetBalance", "Must be", "Required to")


class _Section(HTMLParser):
    """Each element with an id: its attributes and its whole text (nested elements too)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self._texts: dict[str, list[str]] = {}
        self._stack: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        element = found.get("id")
        if element:
            self.attrs[element] = found
            self._texts[element] = []
        if tag not in _VOID:
            self._stack.append(element)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID and self._stack:
            self._stack.pop()

    def handle_data(self, data: str) -> None:
        for element in self._stack:
            if element:
                self._texts[element].append(data)

    def text(self, element: str) -> str:
        """The element's text, whitespace collapsed."""
        assert element in self._texts, f"no #{element} on the page"
        return " ".join("".join(self._texts[element]).split())

    def has(self, element: str) -> bool:
        """Tell whether the page has an element with this id."""
        return element in self.attrs


def _page(browser: FlaskClient) -> tuple[_Section, str]:
    shown = browser.get("/billing")
    assert shown.status_code == 200, shown.get_data(as_text=True)[:500]
    html = shown.get_data(as_text=True)
    return _Section(html), html


def _api(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> dict[str, Any]:
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org))
    assert answer.status_code == 200, answer.get_json()
    result: dict[str, Any] = answer.get_json()
    return result


def _save(browser: FlaskClient, html: str, **fields: str) -> Any:
    """Send the settings form as a browser does (a ticked box sends enabled=yes)."""
    return browser.post("/billing/auto-top-up", data={"csrf_token": csrf_token(html), **fields})


def _failed_attempts(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                     stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
                     run_worker: Callable[[], list[str]], count: int,
                     code: str = "card_declined") -> None:
    """A card on file, auto top-up 10.00 -> 50.00, and `count` attempts declined by Stripe
    (the clock moved past the retry delay between them, as test_failures does)."""
    save_card(client, auth, stripe_api, org)  # 25.00 credited
    turn_on(client, auth, org, "10.00", "50.00")
    stripe_api.add_callback(responses.POST, INTENTS, callback=lambda _: (
        402, {}, json.dumps(so.card_error(code, so.payment_intent(org=org, amount=4500)))))
    assert charge(client, auth, org, "20.00").status_code == 201  # 5.00: below 10.00
    assert run_worker() == ["failed"]
    for _ in range(count - 1):
        owner_conn.execute("UPDATE organizations SET auto_topup_not_before = now()"
                           " - interval '1 s' WHERE id = %s", (org,))
        assert charge(client, auth, org, "0.10").status_code == 201
        assert run_worker() == ["failed"]


# --- the card on file ------------------------------------------------------------------

def test_without_a_card_the_section_says_how_to_save_one(sign_in: SignIn,
                                                          org: uuid.UUID) -> None:
    page, html = _page(sign_in(org))
    assert page.has("auto-top-up")
    assert page.attrs["saved-card"]["data-saved"] == "false"
    assert "tick “Save this card for automatic top-ups” when you add funds" in page.text(
        "saved-card")
    for absent in ("remove-card", "last-attempt", "auto-top-up-paused", "resume-auto-top-up"):
        assert not page.has(absent), absent
    form = page.attrs["auto-top-up-form"]
    # At the section when it comes back with a problem, not at the top of the page.
    assert (form["method"], form["action"]) == ("post", "/billing/auto-top-up#auto-top-up")
    enabled = page.attrs["auto-top-up-enabled"]
    assert (enabled["type"], enabled["name"], enabled["value"]) == ("checkbox", "enabled", "yes")
    assert "checked" not in enabled
    assert page.attrs["auto-top-up-threshold"]["value"] == ""
    assert page.attrs["auto-top-up-target"]["value"] == ""
    for field in ("auto-top-up-enabled", "auto-top-up-threshold", "auto-top-up-target"):
        assert f'<label for="{field}">' in html, field


def test_a_saved_card_is_shown_with_its_expiry_and_the_settings_prefilled(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, org, exp_year=2029)
    turn_on(client, auth, org, "10.00", "50.00")
    page, _ = _page(sign_in(org))
    assert page.text("saved-card") == "Visa ending 4242, expires 12/2029"
    assert page.attrs["saved-card"]["data-saved"] == "true"
    assert page.text("remove-card") == "Remove card"
    assert "checked" in page.attrs["auto-top-up-enabled"]
    assert page.attrs["auto-top-up-threshold"]["value"] == "10.00"
    assert page.attrs["auto-top-up-target"]["value"] == "50.00"
    assert not page.has("last-attempt")


def test_an_expired_card_says_so(sign_in: SignIn, org: uuid.UUID, client: FlaskClient,
                                 auth: TokenFactory, stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, org, exp_year=2020)
    page, _ = _page(sign_in(org))
    assert page.text("saved-card") == "Visa ending 4242, expired 12/2020"


def test_another_orgs_card_is_not_shown(sign_in: SignIn, org: uuid.UUID, other_org: uuid.UUID,
                                        client: FlaskClient, auth: TokenFactory,
                                        stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, other_org)
    page, _ = _page(sign_in(org))
    assert page.attrs["saved-card"]["data-saved"] == "false"


def _stub_detach(stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
                 org: uuid.UUID, **answer: Any) -> str:
    [(method,)] = owner_conn.execute(
        "SELECT payment_method_id FROM saved_cards WHERE org_id = %s", (org,)).fetchall()
    stripe_api.add(responses.POST, f"{STRIPE}/payment_methods/{method}/detach",
                   **(answer or {"json": so.payment_method(customer=None, method_id=method)}))
    return str(method)


def _detached(stripe_api: responses.RequestsMock) -> list[str]:
    return [str(c.request.url) for c in stripe_api.calls
            if str(c.request.url).endswith("/detach")]


def test_remove_card_detaches_it_at_stripe_and_says_so(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org)
    method = _stub_detach(stripe_api, owner_conn, org)
    browser = sign_in(org)
    _, html = _page(browser)
    removed = browser.post("/billing/auto-top-up/remove-card",
                           data={"csrf_token": csrf_token(html)})
    assert removed.status_code == 303
    assert removed.headers["Location"] == "/billing#auto-top-up"
    assert _detached(stripe_api) == [f"{STRIPE}/payment_methods/{method}/detach"]
    assert owner_conn.execute("SELECT count(*) FROM saved_cards WHERE org_id = %s",
                              (org,)).fetchone() == (0,)
    shown = _api(client, auth, org)
    assert (shown["paymentMethod"], shown["enabled"]) == (None, False)
    page, _ = _page(browser)
    assert page.text("auto-top-up-message").startswith(
        "Visa ending 4242 was removed and automatic top-ups are off.")
    assert page.attrs["saved-card"]["data-saved"] == "false"
    assert "checked" not in page.attrs["auto-top-up-enabled"]
    again, _ = _page(browser)  # said once
    assert not again.has("auto-top-up-message")
    # The same form sent again (a double click): nothing more at Stripe.
    assert browser.post("/billing/auto-top-up/remove-card",
                        data={"csrf_token": csrf_token(html)}).status_code == 303
    assert len(_detached(stripe_api)) == 1
    page, _ = _page(browser)
    assert page.text("auto-top-up-message") == "There is no card on file to remove."


def test_remove_card_when_stripe_fails_keeps_the_card_and_says_so(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org)
    _stub_detach(stripe_api, owner_conn, org, status=500, json={"error": {
        "type": "api_error", "message": "An unknown error occurred"}})
    browser = sign_in(org)
    _, html = _page(browser)
    failed = browser.post("/billing/auto-top-up/remove-card",
                          data={"csrf_token": csrf_token(html)})
    assert failed.status_code == 502
    page = _Section(failed.get_data(as_text=True))
    assert "your card is still on file" in page.text("remove-card-error")
    assert page.text("saved-card").startswith("Visa ending 4242")
    assert _detached(stripe_api)
    shown = _api(client, auth, org)
    assert (shown["paymentMethod"]["last4"], shown["enabled"]) == ("4242", True)


def test_remove_card_without_the_csrf_token_is_refused(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    _stub_detach(stripe_api, owner_conn, org)
    browser = sign_in(org)
    refused = browser.post("/billing/auto-top-up/remove-card", data={"csrf_token": "forged"})
    assert refused.status_code == 400
    assert _detached(stripe_api) == []
    assert _api(client, auth, org)["paymentMethod"] is not None


# --- the settings form -------------------------------------------------------------------

def test_saving_the_form_turns_auto_top_up_on(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)  # 25.00: above the threshold
    browser = sign_in(org)
    _, html = _page(browser)
    saved = _save(browser, html, enabled="yes", threshold="$10", target="1,000.00")
    assert saved.status_code == 303
    assert saved.headers["Location"] == "/billing#auto-top-up"
    shown = _api(client, auth, org)
    assert (shown["enabled"], shown["threshold"], shown["targetBalance"]) == (
        True, 10, 1000)
    page, _ = _page(browser)
    assert page.text("auto-top-up-message") == (
        "Automatic top-ups are on: when your balance falls below $10.00, we charge Visa "
        "ending 4242 to bring it back to $1,000.00.")
    assert "checked" in page.attrs["auto-top-up-enabled"]
    assert page.attrs["auto-top-up-threshold"]["value"] == "10.00"
    assert page.attrs["auto-top-up-target"]["value"] == "1000.00"
    assert attempts_of(owner_conn, org) == []


def test_turning_on_below_the_threshold_starts_a_top_up_and_says_so(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)  # 25.00
    browser = sign_in(org)
    _, html = _page(browser)
    assert _save(browser, html, enabled="yes", threshold="30", target="50").status_code == 303
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["status"], attempt["amount"]) == ("pending", Decimal("25.00"))
    page, _ = _page(browser)
    assert page.text("auto-top-up-message").endswith(
        "Your balance is below that now, so a top-up has started.")
    assert page.attrs["last-attempt"]["data-status"] == "pending"
    assert page.text("last-attempt").startswith("In progress $25.00")


def test_turning_off_keeps_the_amounts(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    browser = sign_in(org)
    _, html = _page(browser)
    # An unticked box is not sent; empty amounts keep theirs while turning off.
    assert _save(browser, html, threshold="", target="").status_code == 303
    shown = _api(client, auth, org)
    assert (shown["enabled"], shown["threshold"], shown["targetBalance"]) == (False, 10, 50)
    page, _ = _page(browser)
    assert page.text("auto-top-up-message").startswith("Automatic top-ups are off.")
    assert page.attrs["auto-top-up-threshold"]["value"] == "10.00"


@pytest.mark.parametrize(("card", "form", "field", "message"), [
    (False, {"enabled": "yes", "threshold": "10", "target": "50"}, "enabled",
     "Save a card first: tick “Save this card for automatic top-ups” when you add funds."),
    (True, {"enabled": "yes", "threshold": "", "target": "50"}, "threshold",
     "Enter the balance at which to top up."),
    (True, {"enabled": "yes", "threshold": "10", "target": ""}, "target",
     "Enter the balance to top up to."),
    (True, {"enabled": "yes", "threshold": "ten", "target": "50"}, "threshold",
     "“ten” is not an amount, such as 10 or 10.00."),
    (True, {"enabled": "yes", "threshold": "1,5", "target": "50"}, "threshold",
     "“1,5” is not an amount"),
    (True, {"enabled": "yes", "threshold": "10.005", "target": "50"}, "threshold",
     "Use whole cents, such as 10 or 10.50."),
    (True, {"enabled": "yes", "threshold": "0", "target": "50"}, "threshold",
     "Enter an amount above zero."),
    (True, {"enabled": "yes", "threshold": "-5", "target": "50"}, "threshold",
     "Enter an amount above zero."),
    (True, {"enabled": "yes", "threshold": "10", "target": "8"}, "target",
     "Top up to more than the balance at which to top up ($10.00)."),
    (True, {"enabled": "yes", "threshold": "10", "target": "12.50"}, "target",
     "Top up to at least $15.00: $5.00 above the balance at which to top up, the smallest "
     "top-up."),
    (True, {"enabled": "yes", "threshold": "10", "target": "10000.01"}, "target",
     "Enter at most $10,000.00."),
    (True, {"enabled": "yes", "threshold": "10", "target": "1e400"}, "target",
     "Enter at most $10,000.00."),
    (False, {"threshold": "10", "target": "9"}, "target",  # turning off checks amounts too
     "Top up to more than the balance at which to top up ($10.00)."),
])
def test_a_refused_form_shows_the_problem_next_to_its_field_and_keeps_what_was_typed(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection, card: bool,
        form: dict[str, str], field: str, message: str) -> None:
    if card:
        save_card(client, auth, stripe_api, org)
    before = _api(client, auth, org)
    browser = sign_in(org)
    _, html = _page(browser)
    refused = _save(browser, html, **form)
    assert refused.status_code == 400
    shown = refused.get_data(as_text=True)
    page = _Section(shown)
    assert page.text(f"auto-top-up-{field}-error").startswith(message)
    assert page.attrs[f"auto-top-up-{field}"]["aria-invalid"] == "true"
    assert f"auto-top-up-{field}-error" in str(page.attrs[f"auto-top-up-{field}"][
        "aria-describedby"])
    # What was typed stays, the box as it was sent.
    assert page.attrs["auto-top-up-threshold"]["value"] == form.get("threshold", "")
    assert page.attrs["auto-top-up-target"]["value"] == form.get("target", "")
    assert ("checked" in page.attrs["auto-top-up-enabled"]) is ("enabled" in form)
    assert not any(word in page.text("auto-top-up") for word in _JARGON)
    assert _api(client, auth, org) == before  # nothing changed
    assert attempts_of(owner_conn, org) == []


def test_a_refusal_by_auto_top_up_itself_is_shown_next_to_its_field(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch) -> None:
    """autotopup.settings.update stays the authority: should the page's own checks ever let
    through what it refuses, its message is shown under the field it names."""
    save_card(client, auth, stripe_api, org)
    before = _api(client, auth, org)
    monkeypatch.setattr(auto_top_up, "_target_problem", lambda *_: None)
    browser = sign_in(org)
    _, html = _page(browser)
    refused = _save(browser, html, enabled="yes", threshold="10", target="8")
    assert refused.status_code == 400
    page = _Section(refused.get_data(as_text=True))
    assert page.text("auto-top-up-target-error") == "Must be above the threshold."
    assert _api(client, auth, org) == before


def test_saving_without_the_csrf_token_is_refused(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, org)
    browser = sign_in(org)
    _page(browser)
    refused = browser.post("/billing/auto-top-up", data={
        "enabled": "yes", "threshold": "10", "target": "50"})
    assert refused.status_code == 400 and "could not be sent" in refused.get_data(as_text=True)
    assert _api(client, auth, org)["enabled"] is False


# --- the last attempt --------------------------------------------------------------------

@pytest.mark.parametrize(("code", "reason"), [
    ("card_declined", "Your card was declined (insufficient funds)."),
    ("authentication_required", "Your bank asked you to confirm this payment"),
    ("expired_card", "Your card has expired."),
])
def test_a_failed_attempt_shows_when_how_much_and_why(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]], code: str, reason: str) -> None:
    _failed_attempts(client, auth, org, stripe_api, owner_conn, run_worker, 1, code)
    [attempt] = attempts_of(owner_conn, org)
    page, html = _page(sign_in(org))
    assert page.attrs["last-attempt"]["data-status"] == "failed"
    text = page.text("last-attempt")
    assert text.startswith("Failed $45.00")
    assert reason in text
    assert "Your balance had fallen to $5.00." in text
    when = attempt["created_at"].astimezone(auto_top_up.dt.UTC)
    assert f'<time datetime="{when.isoformat().replace("+00:00", "Z")}">' in html
    # The next try waits out the delay.
    assert page.text("next-try").endswith("if your balance is still below $10.00.")
    assert not page.has("auto-top-up-paused")


def test_a_successful_attempt_shows_in_progress_then_added(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "15.0025").status_code == 201  # 9.9975: 40.01 to charge
    stripe_api.add(responses.POST, INTENTS, json=so.payment_intent(
        org=org, amount=4001, intent_id="pi_page_auto"))
    browser = sign_in(org)
    page, _ = _page(browser)
    assert page.attrs["last-attempt"]["data-status"] == "pending"
    assert page.text("last-attempt").startswith("In progress $40.01")  # as it will charge
    assert run_worker() == ["submitted"]
    page, _ = _page(browser)
    assert page.attrs["last-attempt"]["data-status"] == "submitted"
    assert page.text("last-attempt").startswith("In progress $40.01")
    [attempt] = attempts_of(owner_conn, org)
    [(customer, method)] = owner_conn.execute(
        "SELECT customer_id, payment_method_id FROM saved_cards WHERE org_id = %s",
        (org,)).fetchall()
    intent = {**so.payment_intent(org=org, amount=4001, intent_id="pi_page_auto", metadata={
        **so.ours(org), "auto_topup_attempt": str(attempt["id"])}),
        "customer": customer, "payment_method": method}
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    page, _ = _page(browser)
    assert page.attrs["last-attempt"]["data-status"] == "succeeded"
    assert page.text("last-attempt").startswith("Added $40.01")
    assert "$40.01 was added to your balance." in page.text("last-attempt")


def test_an_attempt_canceled_before_charging_says_so(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201
    browser = sign_in(org)
    _, html = _page(browser)
    assert _save(browser, html).status_code == 303  # turned off before the worker ran
    assert run_worker() == ["canceled"]
    page, _ = _page(browser)
    assert page.attrs["last-attempt"]["data-status"] == "canceled"
    assert page.text("last-attempt").startswith("Canceled $45.00")
    assert "before your card was charged" in page.text("last-attempt")


# --- paused ------------------------------------------------------------------------------

def test_paused_after_three_failures_explains_why_and_offers_to_pay_now(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _failed_attempts(client, auth, org, stripe_api, owner_conn, run_worker, 3)
    assert _api(client, auth, org)["paused"] is True
    page, _ = _page(sign_in(org))
    paused = page.text("auto-top-up-paused")
    assert "paused because the last 3 attempts failed in a row" in paused
    assert "The last one: Your card was declined (insufficient funds)." in paused
    # Balance 4.80 (25.00 - 20.00 - 0.10 - 0.10), target 50.00.
    assert "Paying $45.20 now brings your balance back to $50.00" in paused
    assert page.text("resume-auto-top-up") == "Pay now and turn automatic top-ups back on"
    assert "checked" not in page.attrs["auto-top-up-enabled"]
    assert not page.has("next-try")
    assert not any(word in paused for word in _JARGON)


def _sessions_made(stripe_api: responses.RequestsMock) -> list[responses.Call]:
    return [c for c in stripe_api.calls if c.request.url == SESSIONS]


def test_pay_now_starts_a_checkout_that_saves_the_card_and_resumes_auto_top_up(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _failed_attempts(client, auth, org, stripe_api, owner_conn, run_worker, 3)
    session = so.checkout_session(org=org, amount_total=4520, status="open",
                                  payment_status="unpaid")
    stripe_api.add(responses.POST, SESSIONS, json=session)
    browser = sign_in(org)
    _, html = _page(browser)
    made_before = len(_sessions_made(stripe_api))  # save_card's own Checkout
    sent = browser.post("/billing/auto-top-up/resume", data={
        "csrf_token": csrf_token(html), "attempt": uuid.uuid4().hex})
    assert sent.status_code == 303
    assert sent.headers["Location"] == session["url"]
    [created] = _sessions_made(stripe_api)[made_before:]
    form = parse_qs(created.request.body)  # type: ignore[arg-type]  # the SDK sends a form
    [(customer,)] = owner_conn.execute(
        "SELECT customer_id FROM stripe_customers WHERE org_id = %s", (org,)).fetchall()
    assert form["customer"] == [customer]
    assert form["payment_intent_data[setup_future_usage]"] == ["off_session"]
    assert form["line_items[0][price_data][unit_amount]"] == ["4520"]
    # Paid with a new card: saved, and auto top-up is back on (sql save_card).
    method = so.payment_method(customer=customer, last4="1881")
    stripe_api.add(responses.GET, f"{STRIPE}/payment_methods/{method['id']}", json=method)
    intent = {**so.payment_intent(org=org, amount=4520), "customer": customer,
              "payment_method": method["id"], "setup_future_usage": "off_session",
              "created": so.CREATED + 3600}
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    page, _ = _page(browser)
    assert not page.has("auto-top-up-paused")
    assert page.text("saved-card").startswith("Visa ending 1881")
    assert "checked" in page.attrs["auto-top-up-enabled"]
    assert page.text("last-attempt").endswith(
        "Automatic top-ups have been turned back on since.")


def test_pay_now_when_not_paused_charges_nothing(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org)
    calls = len(stripe_api.calls)
    browser = sign_in(org)
    _, html = _page(browser)
    sent = browser.post("/billing/auto-top-up/resume", data={"csrf_token": csrf_token(html)})
    assert sent.status_code == 303 and sent.headers["Location"] == "/billing#auto-top-up"
    assert len(stripe_api.calls) == calls
    page, _ = _page(browser)
    assert page.text("auto-top-up-message") == (
        "Automatic top-ups are not paused: nothing was charged.")


def test_pay_now_when_stripe_fails_says_so_in_the_pause(
        sign_in: SignIn, org: uuid.UUID, client: FlaskClient, auth: TokenFactory,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _failed_attempts(client, auth, org, stripe_api, owner_conn, run_worker, 3)
    stripe_api.add(responses.POST, SESSIONS, status=400, json={"error": {
        "type": "invalid_request_error", "message": "No such price"}})
    browser = sign_in(org)
    _, html = _page(browser)
    failed = browser.post("/billing/auto-top-up/resume", data={
        "csrf_token": csrf_token(html), "attempt": uuid.uuid4().hex})
    assert failed.status_code == 502
    page = _Section(failed.get_data(as_text=True))
    assert "Nothing was charged" in page.text("resume-error")
    assert page.has("auto-top-up-paused")


@pytest.mark.parametrize(("balance", "target", "amount"), [
    ("4.80", "50.00", "45.20"),
    ("9.9975", "50.00", "40.01"),  # rounded up to a cent: the balance reaches the target
    ("48.00", "50.00", "5.00"),  # the smallest top-up
    ("60.00", "50.00", "5.00"),
    ("0.00", "10000.00", "10000.00"),
])
def test_pay_now_brings_the_balance_to_the_target_within_the_bounds(
        settings: Settings, balance: str, target: str, amount: str) -> None:
    assert auto_top_up.resume_amount(settings, Decimal(balance), Decimal(target)) == Decimal(
        amount)


@pytest.mark.parametrize(("code", "decline_code", "reason"), [
    ("card_declined", "insufficient_funds", "Your card was declined (insufficient funds)."),
    ("card_declined", "generic_decline", "Your card was declined."),
    # Stripe asks that these be shown as a generic decline.
    ("card_declined", "stolen_card", "Your card was declined."),
    ("card_declined", "lost_card", "Your card was declined."),
    ("card_declined", "authentication_required", "Your bank asked you to confirm"),
    ("stripe_unavailable", None, "Our payment provider could not be reached"),
    ("resource_missing", None, "The saved card is no longer available to charge."),
    ("parameter_invalid_integer", None, "The payment did not go through."),
])
def test_failure_reasons_are_in_the_customers_words(code: str, decline_code: str | None,
                                                   reason: str) -> None:
    assert auto_top_up.failure_reason(code, decline_code).startswith(reason)
