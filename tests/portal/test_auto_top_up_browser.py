"""The "Automatic top-up" section in headless Chromium through stripe-sim: a card saved by
paying with the box ticked, auto top-up turned on from the page, a declined attempt and its
reason, a pause, and "Pay now" turning it back on; screenshots of the pause."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from billing_gateway.autotopup import attempts
from billing_gateway.topups import stripe_client
from tests.plugins.browser import (
    DESKTOP,
    PHONE,
    WAIT_SECONDS,
    LiveGateway,
    full_page_screenshot,
    open_billing_page,
    screenshot_dir,
    set_viewport,
    wait_until,
)
from tests.portal.test_billing_page import (
    payment_status_becomes,
    quick_amount_button,
    wait_for_pay_page,
)

pytestmark = pytest.mark.browser


def text_of(browser: Any, element_id: str) -> str:
    """An element's visible text, whitespace collapsed."""
    return " ".join(browser.find_element(By.ID, element_id).text.split())


def pay_with_the_card_saved(browser: Any, gateway: LiveGateway, org: uuid.UUID) -> None:
    """Tick "Save this card", pay $25 on stripe-sim and wait for the credit."""
    browser.find_element(By.CSS_SELECTOR, "label[for=save-card]").click()
    quick_amount_button(browser, Decimal(25)).click()
    wait_for_pay_page(browser, gateway)
    browser.find_element(By.ID, "pay").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    payment_status_becomes(browser, "credits added")


def turn_on_from_the_page(browser: Any, threshold: str, target: str) -> None:
    """Tick the box, type both amounts and Save; wait for the page that comes back."""
    box = browser.find_element(By.ID, "auto-top-up-enabled")
    if not box.is_selected():
        browser.find_element(By.CSS_SELECTOR, "label[for=auto-top-up-enabled]").click()
    for element_id, value in (("auto-top-up-threshold", threshold),
                              ("auto-top-up-target", target)):
        field = browser.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(value)
    form = browser.find_element(By.ID, "auto-top-up-form")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.staleness_of(form))
    WebDriverWait(browser, WAIT_SECONDS).until(
        ec.presence_of_element_located((By.ID, "auto-top-up-form")))


def decline_next_charges(gateway: LiveGateway, times: int) -> None:
    """Script stripe-sim, as an operator would: the next off-session charges are declined."""
    answer = requests.post(f"{gateway.sim_url}/sim/next-charge", json={
        "outcome": "card_declined", "times": times}, timeout=10)
    assert answer.status_code == 201, answer.text


@pytest.fixture(autouse=True)
def _no_charges_left_scripted(live_gateway: LiveGateway) -> Any:
    """stripe-sim lives for the session: a failed test's unused script must not decline the
    next test's charges."""
    yield
    requests.delete(f"{live_gateway.sim_url}/sim/next-charge", timeout=10)


def run_worker(gateway: LiveGateway, worker_conn: psycopg.Connection) -> list[str]:
    """Attempt every due auto top-up once, as `billing-gateway worker` does, against the
    live gateway's database and stripe-sim."""
    client = stripe_client.make_client(gateway.settings)
    outcomes = []
    while (outcome := attempts.attempt_next(worker_conn, gateway.settings, client)):
        outcomes.append(outcome)
    return outcomes


def auto_top_up(gateway: LiveGateway, org: uuid.UUID) -> dict[str, Any]:
    """GET /auto-top-up as the org's member."""
    answer = gateway.api("GET", "/auto-top-up", "member", org)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def failed_payments_delivered(owner_conn: psycopg.Connection, org: uuid.UUID,
                              count: int) -> None:
    """Wait for stripe-sim's payment_intent.payment_failed events (sent after its 402), so
    no webhook is still arriving when the test ends."""
    def arrived() -> bool:
        row = owner_conn.execute(
            "SELECT count(*) FROM stripe_events WHERE type = 'payment_intent.payment_failed'"
            " AND payload -> 'data' -> 'object' -> 'metadata' ->> 'org_id' = %s",
            (str(org),)).fetchone()
        return row is not None and row[0] >= count
    wait_until(arrived, lambda: f"{count} payment_failed events never arrived")


def test_save_a_card_turn_auto_top_up_on_and_see_a_declined_attempt(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID,
        worker_conn: psycopg.Connection) -> None:
    open_billing_page(browser, live_gateway, org)
    assert browser.find_element(By.ID, "saved-card").get_attribute("data-saved") == "false"
    pay_with_the_card_saved(browser, live_gateway, org)
    expiry = f"12/{time.gmtime().tm_year + 3}"  # stripe-sim's test card
    assert text_of(browser, "saved-card") == f"Visa ending 4242, expires {expiry}"

    # Refused first: the problem beside its field, in view, the cursor in that field.
    turn_on_from_the_page(browser, "10", "12")
    error = browser.find_element(By.ID, "auto-top-up-target-error")
    assert error.text.startswith("Top up to at least $15.00")
    assert browser.execute_script(
        "var r = arguments[0].getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight;", error)
    assert browser.switch_to.active_element.get_attribute("id") == "auto-top-up-target"
    assert browser.find_element(By.ID, "auto-top-up-target").get_attribute("value") == "12"
    assert auto_top_up(live_gateway, org)["enabled"] is False

    turn_on_from_the_page(browser, "10", "50.00")
    assert browser.current_url.endswith("/billing#auto-top-up")
    assert text_of(browser, "auto-top-up-message") == (
        "Automatic top-ups are on: when your balance falls below $10.00, we charge Visa "
        "ending 4242 to bring it back to $50.00.")
    assert browser.find_element(By.ID, "auto-top-up-enabled").is_selected()
    assert browser.find_element(By.ID, "auto-top-up-threshold").get_attribute(
        "value") == "10.00"
    shown = auto_top_up(live_gateway, org)
    assert (shown["enabled"], shown["threshold"], shown["targetBalance"]) == (True, 10, 50)

    decline_next_charges(live_gateway, 1)
    live_gateway.charge(org, 2000)  # 20.00: the balance is 5.00, below 10.00
    assert run_worker(live_gateway, worker_conn) == ["failed"]
    browser.get(f"{live_gateway.url}/billing")
    last = browser.find_element(By.ID, "last-attempt")
    assert last.get_attribute("data-status") == "failed"
    assert text_of(browser, "last-attempt").startswith("Failed $45.00")
    # stripe-sim declines as generic_decline: the bank gave no reason to show.
    assert "Your card was declined." in last.text
    assert "Your balance had fallen to $5.00." in last.text
    assert browser.find_element(By.ID, "next-try").is_displayed()
    assert live_gateway.balance(org) == Decimal("5.00")


def test_paused_then_pay_now_turns_auto_top_up_back_on(
        live_gateway: LiveGateway, browser: Any, org: uuid.UUID,
        worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        tmp_path: Path) -> None:
    open_billing_page(browser, live_gateway, org)
    pay_with_the_card_saved(browser, live_gateway, org)  # 25.00
    turn_on_from_the_page(browser, "10.00", "50.00")
    decline_next_charges(live_gateway, 3)
    live_gateway.charge(org, 2000, description="Spring sale: 2,000 SMS")  # 5.00
    assert run_worker(live_gateway, worker_conn) == ["failed"]
    for _ in range(2):  # an hour later each time, another charge below the threshold
        owner_conn.execute("UPDATE organizations SET auto_topup_not_before = now()"
                           " - interval '1 s' WHERE id = %s", (org,))
        live_gateway.charge(org, 10, description="Order updates: 10 SMS")
        assert run_worker(live_gateway, worker_conn) == ["failed"]
    failed_payments_delivered(owner_conn, org, 3)
    assert auto_top_up(live_gateway, org)["paused"] is True

    browser.get(f"{live_gateway.url}/billing")  # not only a fragment: a new page
    paused = text_of(browser, "auto-top-up-paused")
    assert "paused because the last 3 attempts failed in a row" in paused
    assert "The last one: Your card was declined." in paused
    assert "Paying $45.20 now brings your balance back to $50.00" in paused
    assert not browser.find_element(By.ID, "auto-top-up-enabled").is_selected()

    folder = screenshot_dir(tmp_path)
    for name, size in (("billing-paused-desktop.png", DESKTOP),
                       ("billing-paused-phone.png", PHONE)):
        set_viewport(browser, size)
        browser.refresh()
        WebDriverWait(browser, WAIT_SECONDS).until(
            ec.presence_of_element_located((By.ID, "auto-top-up-paused")))
        full_page_screenshot(browser, folder / name)
        assert (folder / name).read_bytes().startswith(b"\x89PNG")
    set_viewport(browser, DESKTOP)

    browser.find_element(By.ID, "resume-auto-top-up").click()
    session_id = wait_for_pay_page(browser, live_gateway)
    assert browser.find_element(By.ID, "amount").text == "$45.20"
    assert "saves it" in browser.find_element(By.TAG_NAME, "body").text
    browser.find_element(By.ID, "pay").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    assert browser.current_url.endswith(f"session_id={session_id}")
    payment_status_becomes(browser, "credits added")
    assert not browser.find_elements(By.ID, "auto-top-up-paused")
    assert browser.find_element(By.ID, "auto-top-up-enabled").is_selected()
    shown = auto_top_up(live_gateway, org)
    assert (shown["enabled"], shown["paused"], shown["consecutiveFailures"]) == (True, False, 0)
    assert live_gateway.balance(org) == Decimal("50.00")
    assert text_of(browser, "last-attempt").endswith(
        "Automatic top-ups have been turned back on since.")
