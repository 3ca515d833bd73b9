"""Rate limits (flask-limiter): per caller for members and admins, per address otherwise.

The token's subject is the key when the request carries a valid token; requests without
one count against the client address. The SMS sender (role `service`) and correctly
signed webhooks are never limited: throttling them would lose charges or payments. The
webhook is exempt from the limiter's own check, which runs before the view and so before
the signature is known; the view counts only deliveries that fail verification, per
address, and refuses those past the limit (forged_delivery). Counters live in memory by
default, or in Redis when RATELIMIT_STORAGE_URI says so (several instances share one budget).
https://flask-limiter.readthedocs.io/en/stable/
"""

from __future__ import annotations

import logging
import math
import time

import limits
from flask import Flask, Response, current_app, g
from flask_jwt_extended import verify_jwt_in_request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from billing_gateway.platform.auth import SERVICE, Caller, current_caller
from billing_gateway.platform.config import Settings
from billing_gateway.platform.errors import BillingError

log = logging.getLogger("billing_gateway")

# Probes and the API description: never limited (load balancers poll them).
PUBLIC_ENDPOINTS = ("health.healthz", "health.readyz", "api-docs.openapi_json")
WEBHOOK_ENDPOINT = "stripe.stripe_webhook"


def _verified_caller() -> Caller | None:
    """The request's caller when it carries a valid token, else None (the view answers 401)."""
    if "rate_caller" not in g:
        try:
            verify_jwt_in_request()
            g.rate_caller = current_caller()  # cached in g: require_role will not verify again
        except Exception:  # no token, or a bad one
            g.rate_caller = None
    caller: Caller | None = g.rate_caller
    return caller


def init_app(app: Flask, settings: Settings) -> Limiter:
    """Attach a limiter to this app (each app its own counters and settings)."""
    enabled = settings.rate_limit.strip().lower() != "off"

    def caller_key() -> str:
        caller = _verified_caller()
        return f"sub:{caller.subject}" if caller else f"addr:{get_remote_address()}"

    def sms_sender() -> bool:
        caller = _verified_caller()
        return caller is not None and caller.role == SERVICE

    # Registered before the limiter's own hook, so it runs after it (Flask runs
    # after_request functions in reverse order) and sees the headers it added.
    app.after_request(_retry_after_only_when_refused)
    limiter = Limiter(
        key_func=caller_key,
        app=app,
        default_limits=[settings.rate_limit] if enabled else [],
        storage_uri=settings.ratelimit_storage_uri,
        headers_enabled=True,
        enabled=enabled,
    )
    # The SMS sender is never limited: a request filter, checked before any limit is
    # resolved, rather than exempting each default limit after resolving it
    # (bench/request_cost.py, docs/performance.md).
    limiter.request_filter(sms_sender)
    for endpoint in (*PUBLIC_ENDPOINTS, WEBHOOK_ENDPOINT):
        if endpoint in app.view_functions:
            limiter.exempt(app.view_functions[endpoint])
    app.extensions["billing_forged_webhook_limits"] = (
        limits.parse_many(settings.rate_limit) if enabled else [])
    return limiter


class ForgedDeliveriesLimited(BillingError):
    """Too many webhook deliveries from this address failed verification."""

    code, status = "rate_limited", 429


def forged_delivery() -> None:
    """Count a webhook delivery that failed verification against its address; past the
    limit raise ForgedDeliveriesLimited (429). Signed deliveries never come here."""
    items: list[limits.RateLimitItem] = current_app.extensions["billing_forged_webhook_limits"]
    if not items:
        return
    strategy = current_app.extensions["billing_limiter"].limiter
    address = get_remote_address()
    for item in items:
        try:
            allowed = strategy.hit(item, "forged-webhook", address)
        except Exception:  # counters unreachable (Redis down): fail open rather than answer
            # 500 to a forger; signed deliveries never come here anyway.
            log.warning("rate-limit storage failed; forged delivery not counted", exc_info=True)
            return
        if not allowed:
            reset_at, _ = strategy.get_window_stats(item, "forged-webhook", address)
            refused = ForgedDeliveriesLimited(
                "Too many webhook deliveries from this address failed verification")
            refused.retry_after = max(1, math.ceil(reset_at - time.time()))
            raise refused


def _retry_after_only_when_refused(response: Response) -> Response:
    """flask-limiter's headers include Retry-After on every answer; it means "wait" and
    belongs on a 429 only (the X-RateLimit-* headers stay, for clients that pace)."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response
