"""A slow or silent Stripe never stops SMS charging: the service under gunicorn, measured
from outside by bench/slow_stripe.py, while 32 customers keep checkouts in flight against a
Stripe stand-in that answers late (slow) or never (silent)."""

from __future__ import annotations

import pytest

from bench.slow_stripe import Report, render, run

# Not in the everyday loop (-m "not slow"): gunicorn against a slow and a silent Stripe, 10 s each.
pytestmark = pytest.mark.slow

SECONDS = 10.0
CHECKOUTS = 32
DEDUCT_RATE = 40.0
STRIPE_TIMEOUT = 2.0
# The bound for charges and balance reads while Stripe is slow.
P99_BOUND_MS = 100.0
# Longer than any checkout may take (STRIPE_TIMEOUT x 2 tries + the bench's 3 s margin =
# 7 s), so a hanging one is seen hanging, yet short enough to keep the test bounded.
REQUEST_TIMEOUT = 12.0


@pytest.fixture(autouse=True)
def short_stripe_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service reads STRIPE_TIMEOUT from the environment start_service passes on."""
    monkeypatch.setenv("STRIPE_TIMEOUT", str(STRIPE_TIMEOUT))


def _measure(stripe: str, delay: float = 0.0) -> Report:
    return run(stripe, delay, SECONDS, CHECKOUTS, deduct_rate=DEDUCT_RATE,
               request_timeout=REQUEST_TIMEOUT, say=lambda _line: None)


def _assert_charging_and_reading_unaffected(report: Report) -> None:
    figures = render(report)
    assert report.stripe_timeout == STRIPE_TIMEOUT, figures
    assert report.standin["calls"] > 0, "the service never called the stand-in\n" + figures
    for name, kind in (("POST /deduct", report.deduct), ("GET /balance", report.balance)):
        assert kind.not_2xx == 0, f"{name} answered {dict(kind.statuses)}\n{figures}"
        assert kind.p(99) < P99_BOUND_MS, f"{name} p99 {kind.p(99):.0f} ms\n{figures}"
    # The SMS sender kept its pace: nearly every scheduled charge was sent and answered.
    assert report.deduct.count >= 0.9 * DEDUCT_RATE * SECONDS, figures
    assert report.balance.count > 0, figures


def _assert_every_checkout_answered_in_time(report: Report) -> None:
    figures = render(report)
    allowed = {"502", "503"}
    unexpected = {status: n for status, n in report.checkout.statuses.items()
                  if not status.startswith("2") and status not in allowed}
    assert report.checkout.count >= CHECKOUTS, figures
    assert unexpected == {}, f"checkouts answered {unexpected}\n{figures}"
    assert report.checkout_503_without_retry_after == 0, figures
    assert report.checkout_over_limit == 0, (
        f"checkouts took longer than {report.checkout_limit_s:g} s\n{figures}")


def test_slow_stripe_never_slows_charges_or_balance_reads() -> None:
    # Stripe answers, but only after most of the service's timeout.
    report = _measure("slow", delay=1.5)
    assert "201" in report.checkout.statuses, (
        "no checkout completed: the stand-in's session was not accepted\n" + render(report))
    _assert_charging_and_reading_unaffected(report)
    _assert_every_checkout_answered_in_time(report)


def test_silent_stripe_never_stops_charges_or_hangs_a_checkout() -> None:
    report = _measure("silent")
    _assert_charging_and_reading_unaffected(report)
    _assert_every_checkout_answered_in_time(report)
