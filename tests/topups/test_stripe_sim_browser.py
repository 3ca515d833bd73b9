"""The browser harness on its own, before any page of ours: a Checkout Session made through the
JSON API is paid by clicking "Pay" on stripe-sim's page in headless Chromium, and the credit
lands through the signed webhook."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from tests.plugins.browser import WAIT_SECONDS, LiveGateway

pytestmark = pytest.mark.browser


def test_clicking_pay_in_chromium_credits_the_org(live_gateway: LiveGateway, browser: Any,
                                                  org: uuid.UUID) -> None:
    created = live_gateway.api("POST", "/create-checkout", "member", org,
                               json={"amount": "25.00"})
    assert created.status_code == 201, created.text
    session = created.json()
    assert session["url"].startswith(f"{live_gateway.sim_url}/pay/")

    browser.get(session["url"])
    assert browser.find_element(By.ID, "amount").text == "$25.00"
    assert live_gateway.balance(org) == 0
    browser.find_element(By.ID, "pay").click()

    # Chromium follows stripe-sim's 303 to the success URL, whatever the gateway answers there.
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("success=true"))
    assert browser.current_url == (
        f"{live_gateway.url}/billing?success=true&session_id={session['sessionId']}")
    live_gateway.wait_for_balance(org, Decimal("25.00"))
    assert live_gateway.sim.sessions[session["sessionId"]]["payment_status"] == "paid"


def test_clicking_cancel_in_chromium_credits_nothing(live_gateway: LiveGateway, browser: Any,
                                                     org: uuid.UUID) -> None:
    session = live_gateway.api("POST", "/create-checkout", "member", org,
                               json={"amount": "10.00"}).json()
    browser.get(session["url"])
    browser.find_element(By.ID, "cancel").click()
    WebDriverWait(browser, WAIT_SECONDS).until(ec.url_contains("canceled=true"))
    assert browser.current_url == f"{live_gateway.url}/billing?canceled=true"
    assert live_gateway.balance(org) == 0
    assert live_gateway.sim.sessions[session["sessionId"]]["status"] == "open"
