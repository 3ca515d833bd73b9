"""Rate limits (flask-limiter): per caller for members and admins, per address otherwise.

The token's subject is the key when the request carries a valid token; requests without
one (including webhook deliveries that fail verification) count against the client
address. The SMS sender (role `service`) and correctly signed webhooks are not limited:
throttling them would lose charges or payments. Counters live in memory by default, or
in Redis when RATELIMIT_STORAGE_URI says so (several instances share one budget).
https://flask-limiter.readthedocs.io/en/stable/
"""

from __future__ import annotations

from flask import Flask, Response, g
from flask_jwt_extended import verify_jwt_in_request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from billing_gateway.auth import SERVICE, Caller, current_caller
from billing_gateway.config import Settings

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

    def exempt() -> bool:
        caller = _verified_caller()
        return caller is not None and caller.role == SERVICE

    # Registered before the limiter's own hook, so it runs after it (Flask runs
    # after_request functions in reverse order) and sees the headers it added.
    app.after_request(_retry_after_only_when_refused)
    limiter = Limiter(
        key_func=caller_key,
        app=app,
        default_limits=[settings.rate_limit] if enabled else [],
        default_limits_exempt_when=exempt,
        storage_uri=settings.ratelimit_storage_uri,
        headers_enabled=True,
        enabled=enabled,
    )
    for endpoint in PUBLIC_ENDPOINTS:
        if endpoint in app.view_functions:
            limiter.exempt(app.view_functions[endpoint])
    if enabled and WEBHOOK_ENDPOINT in app.view_functions:
        # Only deliveries that fail verification count, against their address: a flood
        # of forged webhooks is cut off, Stripe's signed deliveries never are.
        # The decorator's wrapper does the check, so it replaces the registered view.
        limited = limiter.limit(settings.rate_limit, key_func=get_remote_address,
                                deduct_when=_failed_verification)
        app.view_functions[WEBHOOK_ENDPOINT] = limited(  # type: ignore[assignment]
            app.view_functions[WEBHOOK_ENDPOINT])
    return limiter


def _retry_after_only_when_refused(response: Response) -> Response:
    """flask-limiter's headers include Retry-After on every answer; it means "wait" and
    belongs on a 429 only (the X-RateLimit-* headers stay, for clients that pace)."""
    if response.status_code != 429:
        response.headers.pop("Retry-After", None)
    return response


def _failed_verification(response: Response) -> bool:
    return response.status_code == 400
