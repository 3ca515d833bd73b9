"""The application factory: `create_app` builds the WSGI app (nothing connects until a request)."""

from __future__ import annotations

import uuid

from flask import Flask, Response, g, request
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from billing_gateway import autotopup, ledger, notifications, platform, portal, topups, usage
from billing_gateway.platform import auth, db, logs, metrics, rate_limits
from billing_gateway.platform.config import Settings, load_settings
from billing_gateway.platform.errors import handle_http_exception, register_error_handlers
from billing_gateway.platform.json_codec import DecimalJSONProvider
from billing_gateway.platform.schemas import ErrorResponse

__all__ = ["create_app"]


class BillingApi(Api):
    """flask-smorest's Api with the contract's error shape for HTTP errors."""

    # Documents errors in /openapi.json with the shape the handlers really produce.
    ERROR_SCHEMA = ErrorResponse

    def handle_http_exception(self, error: HTTPException) -> ResponseReturnValue:
        """Answer HTTP errors (404, 405, 413, 422) with the one JSON error shape."""
        return handle_http_exception(error)


def _openapi_config(settings: Settings) -> dict[str, object]:
    return {
        "API_TITLE": "billing-gateway",
        "API_VERSION": "1.0.0",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "API_SPEC_OPTIONS": {
            "info": {"description": "Prepaid SMS credits: balance, history, top-ups, charges."},
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
                }
            },
            "security": [{"bearerAuth": []}],
        },
    }


def _assign_request_id() -> None:
    supplied = request.headers.get("X-Request-Id", "")
    valid = 0 < len(supplied) <= 64 and supplied.isprintable()
    g.request_id = supplied if valid else uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    return response


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> Flask:
    """Build the WSGI application; nothing connects until the first request."""
    settings = settings or load_settings()
    dsn = database_url or settings.database_url
    if not dsn:
        raise RuntimeError(
            "DATABASE_URL is not set; run `billing-gateway serve` for the embedded database"
        )
    app = Flask(__name__)
    app.json = DecimalJSONProvider(app)
    app.config.update(
        BILLING_SETTINGS=settings,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        **_openapi_config(settings),
    )
    logs.configure()

    register_error_handlers(app)
    auth.init_app(app, settings)
    db.init_app(app, dsn, min_size=settings.pool_min_size, max_size=settings.pool_max_size,
                timeout=settings.pool_timeout, low_balance_default=settings.low_balance_default)
    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    app.after_request(logs.keep_for_access_log)

    api = BillingApi(app)
    # Each domain registers itself; platform first (the others stand on it).
    for domain in (platform, ledger, usage, topups, notifications, autotopup, portal):
        domain.init_app(app, api, settings)
    # After every view exists: it exempts the probes and the webhook by endpoint name.
    app.extensions["billing_limiter"] = rate_limits.init_app(app, settings)
    # After the limiter, which it tells to leave /metrics alone (docs/operations.md).
    metrics.init_app(app, settings)
    if settings.trusted_proxies:
        # Behind N proxies the client is the Nth address from the right of X-Forwarded-For;
        # trusting more hops than exist would let a caller choose its own address (and
        # rate-limit key). https://werkzeug.palletsprojects.com/en/stable/middleware/proxy_fix/
        # X-Forwarded-Proto is set (not appended) by each proxy: only the nearest one's counts.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.trusted_proxies, x_proto=1)
    return app

