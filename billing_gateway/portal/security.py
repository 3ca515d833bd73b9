"""What keeps the billing page to itself: its cookie, its CSRF tokens and its headers."""

from __future__ import annotations

import secrets

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from billing_gateway.platform.config import Settings, derived_session_secret
from billing_gateway.portal.sessions import MAX_AGE

PAGE_PREFIX = "/billing"


def is_page_path(path: str) -> bool:
    """Tell whether a path belongs to the billing page (its cookie, its HTML errors)."""
    return path == PAGE_PREFIX or path.startswith(PAGE_PREFIX + "/")


class PageSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only under /billing: the JSON API never reads
    the page's cookie (and pays nothing for it), whatever a browser sends."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Open the cookie session for the page; a null session anywhere else."""
        if not is_page_path(request.path):
            null: SecureCookieSession = self.make_null_session(app)
            return null
        return super().open_session(app, request)


def _signing_secret(settings: Settings) -> str:
    """load_settings always provides one (or refuses to start in production); Settings built
    in code without one get a per-process key: sessions then live in this process only."""
    if settings.session_secret:
        return settings.session_secret
    if settings.jwt_secret:
        return derived_session_secret(settings.jwt_secret)
    return secrets.token_hex(32)


def configure(app: Flask, settings: Settings) -> None:
    """Set the cookie and CSRF settings the page relies on."""
    app.secret_key = _signing_secret(settings)
    app.session_interface = PageSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="billing_session",
        SESSION_COOKIE_PATH=PAGE_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        # The page's own before_request checks POSTs (pages._sign_in); the JSON API and
        # Stripe's webhook carry no cookie to forge, so CSRF does not apply to them.
        WTF_CSRF_CHECK_DEFAULT=False,
        # A token lasts as long as the session can (the session itself ends sooner if idle).
        WTF_CSRF_TIME_LIMIT=int(MAX_AGE.total_seconds()),
    )


def content_security_policy(settings: Settings) -> str:
    """Scripts and styles from this origin only (no inline code at all), forms posting
    here or to Checkout (a 303 after a form is checked against form-action too), and framing
    only by the origins BILLING_FRAME_ANCESTORS names."""
    return "; ".join((
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        f"form-action 'self' {settings.checkout_origin}",
        f"frame-ancestors {settings.frame_ancestors}",
        "base-uri 'none'",
    ))


def add_headers(response: Response, settings: Settings) -> Response:
    """Give every page response the security headers and keep balances out of caches."""
    response.headers["Content-Security-Policy"] = content_security_policy(settings)
    if settings.frame_ancestors == "'none'":
        response.headers["X-Frame-Options"] = "DENY"  # for browsers older than CSP 2
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: Flask-WTF checks the Referer of HTTPS form posts.
    response.headers["Referrer-Policy"] = "same-origin"
    if "Cache-Control" not in response.headers or not response.headers["Cache-Control"]:
        response.headers["Cache-Control"] = "no-store"
    return response
