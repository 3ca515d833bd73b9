"""The customer billing page in headless Chromium, as CONTRACT.md describes it: the balance,
paying through stripe-sim and coming back, amounts refused, the history's pages and filter,
the CSV export, the low-balance banner, and the page at desktop and phone widths."""

from __future__ import annotations

import csv
import io
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from selenium.common.exceptions import (
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait

from billing_gateway.topups import stripe_client
from tests.plugins.browser import (
    DESKTOP,
    PHONE,
    WAIT_SECONDS,
    BrowserFactory,
    LiveGateway,
    checkout_requests,
    cookie_session,
    full_page_screenshot,
    open_billing_page,
    screenshot_dir,
    set_viewport,
)

pytestmark = pytest.mark.browser

QUICK_AMOUNTS = [Decimal(a) for a in ("10", "25", "50", "100", "250")]


def balance_shown(browser: Any) -> str:
    """What #balance shows."""
    return str(browser.find_element(By.ID, "balance").text.strip())


def history(browser: Any) -> list[tuple[str, Decimal]]:
    """The history table's rows as (type, amount), top to bottom."""
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tr[data-type]")
    return [(row.get_attribute("data-type"), Decimal(row.get_attribute("data-amount")))
            for row in rows]


def api_history(gateway: LiveGateway, org: uuid.UUID, **query: object
                ) -> list[tuple[str, Decimal]]:
    """The same page of history as GET /transactions answers it."""
    answer = gateway.api("GET", "/transactions", "member", org, params=query)
    assert answer.status_code == 200, answer.text
    return [(t["type"], Decimal(str(t["amount"]))) for t in answer.json()["transactions"]]


def quick_amount_button(browser: Any, amount: Decimal) -> WebElement:
    """The #add-funds button for one quick amount."""
    buttons = browser.find_elements(By.CSS_SELECTOR, "#add-funds [data-amount]")
    matching = [b for b in buttons if Decimal(b.get_attribute("data-amount")) == amount]
    assert len(matching) == 1, [b.get_attribute("outerHTML") for b in buttons]
    return matching[0]


def wait_for_pay_page(browser: Any, gateway: LiveGateway) -> str:
    """Wait for stripe-sim's pay page; return the Checkout Session's id."""
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains(f"{gateway.sim_url}/pay/"))
    return str(browser.current_url.rsplit("/", 1)[1])


def payment_status_becomes(browser: Any, *words: str) -> str:
    """Wait, without reloading, for #payment-status to contain every word (any case): the
    page is to update itself after a Checkout return. Return the banner's text."""
    seen = [""]

    def says(driver: Any) -> bool:
        found = driver.find_elements(By.ID, "payment-status")
        seen[0] = found[0].text if found else "<no #payment-status>"
        return all(word.lower() in seen[0].lower() for word in words)

    try:
        WebDriverWait(browser, WAIT_SECONDS, poll_frequency=0.2,
                      ignored_exceptions=[StaleElementReferenceException]).until(says)
    except TimeoutException as exc:
        raise AssertionError(f"#payment-status never said {words}: {seen[0]!r}") from exc
    return seen[0]


def test_portal_link_opens_the_page_with_the_balance(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "12.50")
    open_billing_page(browser, live_gateway, org)
    assert balance_shown(browser) == "$12.50"
    assert history(browser) == [("purchase", Decimal("12.50"))]


def test_quick_amounts_are_the_contracts(live_gateway: LiveGateway, browser: Any,
                                         org: uuid.UUID) -> None:
    open_billing_page(browser, live_gateway, org)
    buttons = browser.find_elements(By.CSS_SELECTOR, "#add-funds [data-amount]")
    assert [Decimal(b.get_attribute("data-amount")) for b in buttons] == QUICK_AMOUNTS
    assert browser.find_elements(By.CSS_SELECTOR, "#add-funds input[name=amount]")


def test_paying_25_on_stripe_sim_adds_credits(live_gateway: LiveGateway, browser: Any,
                                              org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "10.00")
    open_billing_page(browser, live_gateway, org)
    quick_amount_button(browser, Decimal(25)).click()

    session_id = wait_for_pay_page(browser, live_gateway)
    assert browser.find_element(By.ID, "amount").text == "$25.00"
    browser.find_element(By.ID, "pay").click()

    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    assert browser.current_url == (
        f"{live_gateway.url}/billing?success=true&session_id={session_id}")
    assert "$25.00" in payment_status_becomes(browser, "credits added")
    assert balance_shown(browser) == "$35.00"
    assert live_gateway.balance(org) == Decimal("35.00")
    assert history(browser)[0] == ("purchase", Decimal("25.00"))
    # The save-card box was left unticked: Checkout was not asked to keep the card.
    assert [s["customer"] for s in live_gateway.sim_sessions(org)] == [None]


def test_ticking_save_card_leaves_the_card_on_the_orgs_stripe_customer(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    open_billing_page(browser, live_gateway, org)
    box = browser.find_element(By.ID, "save-card")
    assert not box.is_selected()
    browser.find_element(By.CSS_SELECTOR, "label[for=save-card]").click()  # the 44 px target
    assert box.is_selected()
    quick_amount_button(browser, Decimal(25)).click()

    session_id = wait_for_pay_page(browser, live_gateway)
    assert "saves it" in browser.find_element(By.TAG_NAME, "body").text  # stripe-sim says so
    browser.find_element(By.ID, "pay").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    assert "$25.00" in payment_status_becomes(browser, "credits added")

    # Read back from stripe-sim through Stripe's API, as auto top-up will read it.
    stripe = stripe_client.make_client(live_gateway.settings)
    paid = stripe.v1.checkout.sessions.retrieve(session_id)
    [(customer,)] = owner_conn.execute(
        "SELECT customer_id FROM stripe_customers WHERE org_id = %s", (org,)).fetchall()
    assert paid.customer == customer
    assert stripe.v1.customers.retrieve(customer).metadata.to_dict() == {
        "source": "billing-gateway", "org_id": str(org)}
    intent = stripe.v1.payment_intents.retrieve(str(paid.payment_intent))
    assert (intent.customer, intent.setup_future_usage) == (customer, "off_session")
    saved = stripe.v1.customers.payment_methods.list(customer, {"type": "card"}).data
    assert [(card.id, card.card.last4) for card in saved] == [(intent.payment_method, "4242")]
    assert live_gateway.balance(org) == Decimal("25.00")


def test_coming_back_before_the_webhook_says_processing_until_credited(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID) -> None:
    open_billing_page(browser, live_gateway, org)
    quick_amount_button(browser, Decimal(25)).click()
    session_id = wait_for_pay_page(browser, live_gateway)

    # The customer is back on the success URL while Stripe's events are still on their way.
    browser.get(f"{live_gateway.url}/billing?success=true&session_id={session_id}")
    payment_status_becomes(browser, "processing")
    assert balance_shown(browser) == "$0.00"

    live_gateway.sim.pay(session_id)
    assert "$25.00" in payment_status_becomes(browser, "credits added")
    assert balance_shown(browser) == "$25.00"


def enter_custom_amount(browser: Any, amount: str) -> Any:
    """Type an amount into #add-funds and submit it with the form's own button (the one
    that is not a quick amount); return the form."""
    form = browser.find_element(By.ID, "add-funds")
    # The server's check is what is tested: the browser's own min/max check is switched off.
    browser.execute_script("arguments[0].noValidate = true", form)
    field = form.find_element(By.CSS_SELECTOR, "input[name=amount]")
    field.clear()
    field.send_keys(amount)
    submit = form.find_elements(By.CSS_SELECTOR, "[type=submit]:not([data-amount])")
    if submit:
        submit[0].click()
    else:
        browser.execute_script("arguments[0].requestSubmit()", form)
    return form


def test_a_custom_amount_goes_to_checkout(live_gateway: LiveGateway, browser: Any,
                                          org: uuid.UUID) -> None:
    open_billing_page(browser, live_gateway, org)
    enter_custom_amount(browser, "75.50")
    session_id = wait_for_pay_page(browser, live_gateway)
    assert browser.find_element(By.ID, "amount").text == "$75.50"
    assert live_gateway.sim.sessions[session_id]["amount_total"] == 7550


@pytest.mark.parametrize("amount", ["4.99", "10000.01"])
def test_a_custom_amount_outside_the_bounds_is_refused(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID, amount: str,
        owner_conn: psycopg.Connection) -> None:
    live_gateway.add_funds(org, "10.00")
    open_billing_page(browser, live_gateway, org)
    form = enter_custom_amount(browser, amount)
    WebDriverWait(browser, WAIT_SECONDS).until(ec.staleness_of(form))
    assert browser.current_url.startswith(f"{live_gateway.url}/billing")
    error = refusal_shown(browser)
    assert "$5.00 to $10,000.00" in error, error
    assert checkout_requests(owner_conn, org) == 0
    assert live_gateway.sim_sessions(org) == []
    assert balance_shown(browser) == "$10.00"


def refusal_shown(browser: Any) -> str:
    """The text of the visible error message on the page (role=alert or an error class)."""
    def visible_errors(driver: Any) -> list[str]:
        try:
            candidates = driver.find_elements(
                By.CSS_SELECTOR, "[role=alert], .error, [class*=error], [id*=error]")
            return [c.text.strip() for c in candidates if c.is_displayed() and c.text.strip()]
        except WebDriverException:  # the answer's document was still replacing the form's
            return []

    try:
        shown = WebDriverWait(browser, WAIT_SECONDS).until(visible_errors)
    except TimeoutException:
        shown = []
    assert shown, "no visible error on the page:\n" + browser.page_source[:3000]
    return " ".join(shown)


def test_cancel_on_stripe_sim_comes_back_canceled(live_gateway: LiveGateway, browser: Any,
                                                  org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "10.00")
    open_billing_page(browser, live_gateway, org)
    quick_amount_button(browser, Decimal(10)).click()
    wait_for_pay_page(browser, live_gateway)
    browser.find_element(By.ID, "cancel").click()

    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("canceled=true"))
    assert browser.current_url == f"{live_gateway.url}/billing?canceled=true"
    assert "cancel" in browser.find_element(By.ID, "payment-status").text.lower()
    assert balance_shown(browser) == "$10.00"
    assert live_gateway.balance(org) == Decimal("10.00")


def make_history(gateway: LiveGateway, org: uuid.UUID, count: int) -> None:
    """`count` transactions, every amount different so rows can be told apart: a first
    credit, then charges and credits in turn."""
    gateway.add_funds(org, "500.00")
    for n in range(1, count):
        if n % 2:
            gateway.charge(org, n)
        else:
            gateway.add_funds(org, f"{n}.00")


def click_and_wait(browser: Any, element_id: str) -> None:
    """Click a control that loads another page of the table, and wait for it."""
    old = browser.find_element(By.ID, "history")
    browser.find_element(By.ID, element_id).click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.staleness_of(old))
    WebDriverWait(browser, WAIT_SECONDS).until(ec.presence_of_element_located((By.ID, "history")))


def unavailable(browser: Any, element_id: str) -> bool:
    """The control is absent, hidden or disabled."""
    found = browser.find_elements(By.ID, element_id)
    return not found or not found[0].is_displayed() or not found[0].is_enabled() or (
        found[0].get_attribute("aria-disabled") == "true")


def test_history_pages_20_at_a_time_newest_first(live_gateway: LiveGateway, browser: Any,
                                                 org: uuid.UUID) -> None:
    make_history(live_gateway, org, 45)
    open_billing_page(browser, live_gateway, org)

    first = history(browser)
    assert first == api_history(live_gateway, org, limit=20, offset=0)
    assert len(first) == 20
    assert first[0] == ("purchase", Decimal("44.00"))  # the last one made
    assert unavailable(browser, "prev-page")

    click_and_wait(browser, "next-page")
    assert history(browser) == api_history(live_gateway, org, limit=20, offset=20)
    click_and_wait(browser, "next-page")
    last = history(browser)
    assert last == api_history(live_gateway, org, limit=20, offset=40)
    assert len(last) == 5 and last[-1] == ("purchase", Decimal("500.00"))
    assert unavailable(browser, "next-page")

    click_and_wait(browser, "prev-page")
    assert history(browser) == api_history(live_gateway, org, limit=20, offset=20)


def choose_type(browser: Any, kind: str) -> None:
    """Pick a type in #type-filter and wait for the filtered page."""
    old = browser.find_element(By.ID, "history")
    Select(browser.find_element(By.ID, "type-filter")).select_by_value(kind)
    try:
        # The page may apply the filter on change; otherwise its form is submitted.
        WebDriverWait(browser, 1).until(ec.staleness_of(old))
    except TimeoutException:
        browser.find_element(By.ID, "type-filter").submit()
        WebDriverWait(browser, WAIT_SECONDS).until(ec.staleness_of(old))


def test_history_filters_by_type(live_gateway: LiveGateway, browser: Any,
                                 org: uuid.UUID) -> None:
    make_history(live_gateway, org, 45)
    open_billing_page(browser, live_gateway, org)
    choose_type(browser, "sms_send")

    rows = history(browser)
    assert {kind for kind, _ in rows} == {"sms_send"}
    assert rows == api_history(live_gateway, org, type="sms_send", limit=20)
    assert len(rows) == 20
    # The filter holds across pages: 22 charges, so the second page has the last 2.
    click_and_wait(browser, "next-page")
    assert history(browser) == api_history(live_gateway, org, type="sms_send", limit=20,
                                           offset=20)


def test_csv_export_matches_the_api(live_gateway: LiveGateway, browser: Any,
                                    org: uuid.UUID) -> None:
    make_history(live_gateway, org, 6)
    live_gateway.add_funds(org, "1.25", description='Goodwill, "late" refund\nsecond line')
    open_billing_page(browser, live_gateway, org)
    links = browser.find_elements(By.CSS_SELECTOR, "a[href*='transactions.csv']")
    assert links, "no CSV export link on the page"
    href = links[0].get_attribute("href")
    assert href.split("?")[0] == f"{live_gateway.url}/billing/transactions.csv"

    page_csv = cookie_session(browser).get(href, timeout=10)
    assert page_csv.status_code == 200, page_csv.text[:500]
    assert page_csv.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(page_csv.text)))

    api_csv = live_gateway.api("GET", "/transactions.csv", "member", org)
    assert api_csv.status_code == 200, api_csv.text[:500]
    assert list(csv.DictReader(io.StringIO(api_csv.text))) == rows

    # One row per transaction, whatever the order (the contract names none).
    listed = live_gateway.api("GET", "/transactions", "member", org,
                              params={"limit": 100}).json()["transactions"]
    assert len(rows) == len(listed) == 7
    assert {r["id"]: (r["type"], Decimal(r["amount"]), r["description"] or None)
            for r in rows} == {
        t["id"]: (t["type"], Decimal(str(t["amount"])), t["description"]) for t in listed}


def test_csv_export_follows_the_type_filter(live_gateway: LiveGateway, browser: Any,
                                            org: uuid.UUID) -> None:
    make_history(live_gateway, org, 7)
    open_billing_page(browser, live_gateway, org)
    choose_type(browser, "sms_send")
    href = browser.find_element(By.CSS_SELECTOR, "a[href*='transactions.csv']"
                                ).get_attribute("href")
    exported = cookie_session(browser).get(href, timeout=10)
    assert exported.status_code == 200, exported.text[:500]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(Decimal(r["amount"]) for r in rows) == [
        Decimal("-0.05"), Decimal("-0.03"), Decimal("-0.01")]
    assert {r["type"] for r in rows} == {"sms_send"}


@pytest.mark.parametrize(("amount", "banner"), [("4.99", True), ("5.01", False)])
def test_low_balance_banner_only_below_5(live_gateway: LiveGateway, browser: Any,
                                         org: uuid.UUID, amount: str, banner: bool) -> None:
    live_gateway.add_funds(org, amount)
    open_billing_page(browser, live_gateway, org)
    shown = [e for e in browser.find_elements(By.ID, "low-balance") if e.is_displayed()]
    assert bool(shown) == banner, browser.page_source[:3000]


def test_low_balance_banner_appears_after_charges(live_gateway: LiveGateway, browser: Any,
                                                  org: uuid.UUID) -> None:
    live_gateway.add_funds(org, "6.00")
    open_billing_page(browser, live_gateway, org)
    assert not browser.find_elements(By.ID, "low-balance")
    live_gateway.charge(org, 200)  # 2.00: 4.00 left
    browser.refresh()
    assert browser.find_element(By.ID, "low-balance").is_displayed()
    assert balance_shown(browser) == "$4.00"


def test_screenshots_after_a_payment(live_gateway: LiveGateway, browser: Any,
                                     org: uuid.UUID, tmp_path: Path) -> None:
    """The page with some history and a fresh payment, at desktop and phone widths."""
    # A customer's week, as the committed screenshots show it.
    live_gateway.add_funds(org, "50.00", type="bonus", description="Welcome credit")
    live_gateway.add_funds(org, "100.00", description="Invoice 2026-0147")
    for sms, campaign in ((1200, "Black Friday"), (85, None), (3400, "Newsletter"),
                          (240, "Black Friday")):
        live_gateway.charge(org, sms, "0.0075", description=f"{campaign or 'Order updates'}:"
                            f" {sms:,} SMS", **({"campaignId": campaign} if campaign else {}))
    open_billing_page(browser, live_gateway, org)
    quick_amount_button(browser, Decimal(25)).click()
    wait_for_pay_page(browser, live_gateway)
    browser.find_element(By.ID, "pay").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    payment_status_becomes(browser, "credits added")
    # As a customer reads it: the card's balance, and beside it the exact one the history
    # ends at.
    after = browser.find_elements(By.CSS_SELECTOR, "#history td.col-after")
    assert balance_shown(browser) == "$138.06"
    assert browser.find_element(By.ID, "balance-exact").text.startswith(
        f"Exactly {after[0].text}")
    assert after[0].text == "$138.0625"
    assert [c.text for c in browser.find_elements(By.CSS_SELECTOR, "#history td.col-sms")
            if c.text] == ["240", "3,400", "85", "1,200"]
    assert browser.find_element(By.ID, "spend-summary").text.startswith(
        "$36.9375 spent on 4,925 SMS in the last 30 days")

    folder = screenshot_dir(tmp_path)
    for name, size in (("billing-desktop.png", DESKTOP), ("billing-phone.png", PHONE)):
        set_viewport(browser, size)
        browser.refresh()
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.presence_of_element_located((By.ID, "balance")))
        full_page_screenshot(browser, folder / name)
        assert (folder / name).read_bytes().startswith(b"\x89PNG")


def test_phone_width_fits_and_every_field_is_labelled(
        live_gateway: LiveGateway, browser_factory: BrowserFactory, org: uuid.UUID) -> None:
    make_history(live_gateway, org, 25)
    phone = browser_factory(PHONE)
    open_billing_page(phone, live_gateway, org)
    # 390 only if the page declares a viewport; else a phone lays it out 980 wide.
    assert phone.execute_script("return window.innerWidth") == PHONE[0]
    widths = phone.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"the page scrolls sideways: {widths}"

    unlabelled = phone.execute_script("""
        return [...document.querySelectorAll('input, select, textarea')]
          .filter(e => e.type !== 'hidden' && e.type !== 'submit' && e.type !== 'button')
          .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                       && !e.getAttribute('aria-labelledby'))
          .map(e => e.outerHTML)""")
    assert unlabelled == []
