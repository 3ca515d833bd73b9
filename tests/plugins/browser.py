"""Fixtures: the gateway served over HTTP with a stripe-sim beside it, headless Chromium
driven by Selenium, and helpers to open a customer's billing page through a portal link."""

from __future__ import annotations

import base64
import dataclasses
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.wait import WebDriverWait

from billing_gateway import create_app
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.topups import stripe_sim

SIM_SECRET = "whsec_browser_sim_5f0e7a2c"  # a throwaway test secret
DESKTOP = (1280, 900)
PHONE = (390, 844)
# Bounded waits: long enough for a loaded 2-core CI machine, short enough to fail fast.
WAIT_SECONDS = 15
_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
_MISSING = ("Chromium and chromedriver are needed for the browser tests: "
            "apt-get install chromium chromium-driver")


@dataclass
class LiveGateway:
    """The gateway served on a local port, and the stripe-sim its Checkout goes to."""

    url: str
    sim_url: str
    sim: stripe_sim.StripeSim
    settings: Settings

    def token(self, role: str = "member", org: uuid.UUID | None = None) -> str:
        """A signed JWT for a role (and org)."""
        return issue_token(self.settings, org_id=org, role=role, subject=f"browser-{role}")

    def headers(self, role: str = "member", org: uuid.UUID | None = None) -> dict[str, str]:
        """Authorization headers for a role (and org)."""
        return {"Authorization": f"Bearer {self.token(role, org)}"}

    def api(self, method: str, path: str, role: str = "member", org: uuid.UUID | None = None,
            **kwargs: Any) -> requests.Response:
        """Call the JSON API as a role, with a bounded timeout."""
        return requests.request(method, f"{self.url}/api/billing{path}",
                                headers=self.headers(role, org), timeout=10, **kwargs)

    def balance(self, org: uuid.UUID) -> Decimal:
        """The org's balance as GET /balance answers it."""
        answer = self.api("GET", "/balance", "member", org)
        assert answer.status_code == 200, answer.text
        return Decimal(answer.json()["balance"])

    def add_funds(self, org: uuid.UUID, amount: str, **body: object) -> dict:
        """Credit an org as an admin."""
        answer = self.api("POST", "/add-funds", "admin",
                          json={"amount": amount, "orgId": str(org), **body})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def charge(self, org: uuid.UUID, sms_count: int, cost_per_sms: str = "0.0100",
               **body: object) -> dict:
        """Charge an org for SMS as the SMS sender does."""
        answer = self.api("POST", "/deduct", "service", json={
            "orgId": str(org), "smsCount": sms_count, "costPerSms": cost_per_sms,
            "messageId": f"msg-{uuid.uuid4()}", **body})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    def sim_sessions(self, org: uuid.UUID) -> list[dict[str, Any]]:
        """The Checkout Sessions stripe-sim made for the org."""
        return [s for s in list(self.sim.sessions.values())
                if s["metadata"].get("org_id") == str(org)]

    def portal_link(self, org: uuid.UUID) -> str:
        """A one-time link to the org's billing page, asked for by a member."""
        answer = self.api("POST", "/portal-sessions", "member", org, json={})
        assert answer.status_code == 201, answer.text
        link = answer.json()["url"]
        assert link.startswith(f"{self.url}/billing/portal/"), link
        return str(link)

    def wait_for_balance(self, org: uuid.UUID, expected: Decimal) -> None:
        """Poll GET /balance until it shows `expected` (a webhook may still be on its way)."""
        seen: list[Decimal] = []

        def arrived() -> bool:
            seen.append(self.balance(org))
            return seen[-1] == expected

        wait_until(arrived, lambda: f"balance never became {expected}; last {seen[-1:]}")


def wait_until(condition: Callable[[], bool], message: Callable[[], str],
               seconds: float = WAIT_SECONDS) -> None:
    """Poll `condition` every 0.1 s until it holds, or fail with `message()` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(message())
        time.sleep(0.1)


@pytest.fixture(scope="session")
def live_gateway(settings: Settings) -> Iterator[LiveGateway]:
    """The real app over HTTP on a free port, paying through a stripe-sim that signs its
    webhooks with the secret the app checks."""
    gateway, running_sim = LocalServer(), LocalServer()
    url, sim_url = gateway.url, running_sim.url
    sim = stripe_sim.StripeSim(sim_url, f"{url}/api/billing/stripe-webhook", SIM_SECRET)
    running_sim.serve(sim.app())
    overrides: dict[str, object] = {
        "stripe_api_base": sim_url, "stripe_webhook_secrets": (SIM_SECRET,), "public_url": url}
    if "checkout_origin" in {f.name for f in dataclasses.fields(Settings)}:
        # The page's CSP (form-action) lets its forms lead only to Checkout's origin; Chromium
        # enforces it on the 303 to stripe-sim. (Settings before the portal have no such field.)
        overrides["checkout_origin"] = sim_url
    served = settings.with_overrides(**overrides)
    app = create_app(served)
    gateway.serve(app)
    try:
        yield LiveGateway(url, sim_url, sim, served)
    finally:
        gateway.stop()
        running_sim.stop()
        app.extensions["billing_pool"].close()


def chromium_paths() -> tuple[str, str] | None:
    """Chromium's binary and chromedriver, or None when either is missing."""
    binary = next((found for name in _CHROMIUM_NAMES if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (binary, driver) if binary and driver else None


@pytest.fixture(scope="session")
def chromium() -> tuple[str, str]:
    """Chromium and its driver: skipped on a developer's machine without them, failed in CI."""
    paths = chromium_paths()
    if paths is None:
        if os.environ.get("CI"):
            pytest.fail(_MISSING + " (.ci/run installs them)")
        pytest.skip(_MISSING)
    return paths


BrowserFactory = Callable[..., Any]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so a failed test's browsers can be captured."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def idle_browsers() -> Iterator[list[Any]]:
    """Chromium sessions a finished test handed back clean, for the next test (starting and
    quitting one costs about a second each); all quit at the end."""
    idle: list[Any] = []
    yield idle
    for driver in idle:
        driver.quit()


@pytest.fixture
def browser_factory(chromium: tuple[str, str], idle_browsers: list[Any],
                    request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrowserFactory]:
    """Give headless Chromium sessions, each with its own cookies, at a viewport size. After
    a failed test each is saved (screenshot and HTML in tmp_path) and quit; after a passed
    one, cleared of cookies and cache and kept for the next test."""
    binary, driver_path = chromium
    given: list[webdriver.Chrome] = []

    def start(size: tuple[int, int] = DESKTOP) -> webdriver.Chrome:
        if idle_browsers:
            driver = idle_browsers.pop()
        else:
            options = webdriver.ChromeOptions()
            options.binary_location = binary
            for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                             "--disable-gpu", "--disable-extensions", "--no-first-run",
                             # A screenshot 1280 wide is the page 1280 wide, no scrollbar.
                             "--hide-scrollbars",
                             f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
                options.add_argument(argument)
            driver = webdriver.Chrome(options=options, service=Service(driver_path))
        given.append(driver)
        set_viewport(driver, size)
        return driver

    yield start
    report = getattr(request.node, "report_call", None)
    failed = report is None or report.failed
    for number, driver in enumerate(given):
        try:
            if failed:
                driver.save_screenshot(str(tmp_path / f"failed-{number}.png"))
                (tmp_path / f"failed-{number}.html").write_text(driver.page_source)
                driver.quit()
                continue
            driver.get("about:blank")
            # Every cookie of every host, not only the current page's as delete_all_cookies.
            driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
            driver.execute_cdp_cmd("Network.clearBrowserCache", {})
            idle_browsers.append(driver)
        except Exception:
            driver.quit()
            raise


@pytest.fixture
def browser(browser_factory: BrowserFactory) -> Any:
    """One headless Chromium at desktop width."""
    return browser_factory()


def set_viewport(driver: Any, size: tuple[int, int]) -> None:
    """Make the page's viewport exactly `size` CSS pixels (a phone: mobile emulation, so
    the page's viewport meta tag counts as on a real phone)."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def full_page_screenshot(driver: Any, path: Path) -> None:
    """Save the whole page, not just the viewport, as PNG."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    content = metrics["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": content["width"], "height": content["height"],
                 "scale": 1}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: $BILLING_SCREENSHOT_DIR (to refresh the committed ones), else
    the test's own temporary folder."""
    chosen = os.environ.get("BILLING_SCREENSHOT_DIR")
    return Path(chosen) if chosen else tmp_path


def open_billing_page(driver: Any, gateway: LiveGateway, org: uuid.UUID) -> None:
    """Open a fresh portal link for the org, as the platform's dashboard sends a customer,
    and wait for the billing page it redirects to."""
    driver.get(gateway.portal_link(org))
    WebDriverWait(driver, WAIT_SECONDS).until(ec.presence_of_element_located((By.ID, "balance")))
    assert driver.current_url.split("?")[0] == f"{gateway.url}/billing", driver.current_url


def cookie_session(driver: Any) -> requests.Session:
    """A requests session carrying the cookies the browser's current page sees."""
    session = requests.Session()
    # On every request, whatever its path: a test may offer the page's cookie (Path=/billing)
    # where a browser would not send it, such as the JSON API.
    session.headers["Cookie"] = "; ".join(
        f"{cookie['name']}={cookie['value']}" for cookie in driver.get_cookies())
    return session


def checkout_requests(owner_conn: psycopg.Connection, org: uuid.UUID) -> int:
    """How many top-ups the gateway recorded for the org (before it calls Stripe)."""
    row = owner_conn.execute("SELECT count(*) FROM checkout_requests WHERE org_id = %s",
                             (org,)).fetchone()
    assert row is not None
    return int(row[0])
