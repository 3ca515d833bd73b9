"""Error types with a code, and the one handler that turns every failure into the JSON shape."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from flask import Flask, Response, g, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

log = logging.getLogger("billing_gateway")


class BillingError(Exception):
    """A failure the caller should see, with a stable code and HTTP status."""

    code = "internal_error"
    status = 500
    # Seconds a client should wait before trying again (the Retry-After header), if it may.
    retry_after: int | None = None

    def __init__(self, message: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class ValidationFailed(BillingError):
    """The request's input is invalid."""

    code, status = "validation_error", 400


class Unauthorized(BillingError):
    """No usable credential."""

    code, status = "unauthorized", 401


class InsufficientFunds(BillingError):
    """The balance cannot cover the debit."""

    code, status = "insufficient_funds", 402


class Forbidden(BillingError):
    """The credential is valid but does not allow this."""

    code, status = "forbidden", 403


class NotFound(BillingError):
    """No such resource."""

    code, status = "not_found", 404


class IdempotencyConflict(BillingError):
    """A retry key or payment reference was reused for a different request."""

    code, status = "idempotency_conflict", 409


class PaymentProviderError(BillingError):
    """Stripe refused the request or could not be reached."""

    code, status = "payment_provider_error", 502


class StripeNotConfigured(BillingError):
    """No STRIPE_SECRET_KEY (or STRIPE_WEBHOOK_SECRET) is set."""

    code, status = "stripe_not_configured", 503


class ServiceUnavailable(BillingError):
    """A dependency (the database) cannot be reached right now."""

    code, status, retry_after = "service_unavailable", 503, 1


# HTTP errors raised by Flask/Werkzeug itself, mapped to the contract's codes.
_HTTP_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "idempotency_conflict",
    413: "payload_too_large",
    415: "validation_error",
    422: "validation_error",
    429: "rate_limited",
}


def error_response(
    status: int, code: str, message: str, fields: dict[str, Any] | None = None
) -> ResponseReturnValue:
    """Build the one error body: {"error": {"code", "message", "fields"?}}."""
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = fields
    response = jsonify({"error": error})
    response.status_code = status
    return response


def webargs_fields(exc: HTTPException) -> dict[str, Any] | None:
    """Flatten webargs' {"json": {...}, "query": {...}} messages into one field map."""
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if not isinstance(messages, dict):
        return None
    fields: dict[str, Any] = {}
    for per_location in messages.values():
        if isinstance(per_location, dict):
            fields.update(per_location)
    return fields or None


def handle_http_exception(exc: HTTPException) -> ResponseReturnValue:
    """Turn a Werkzeug HTTP error (404, 405, 413, a parser's 422) into the JSON shape."""
    status = exc.code or 500
    if status == 422:
        status = 400
    code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "validation_error")
    fields = webargs_fields(exc)
    message = "Invalid request" if fields else (exc.description or exc.name)
    if status == 405:
        message = "Method not allowed for this endpoint"
    response = error_response(status, code, message, fields)
    if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[union-attr]
    return response


def ask_to_retry(seconds: int) -> None:
    """Send Retry-After with this request's answer (kept by _keep_retry_after)."""
    g.retry_after = seconds


def _keep_retry_after(response: Response) -> Response:
    """Put back the Retry-After an error asked for: the rate limiter's hook removes it from
    every answer but a 429 (rate_limits._retry_after_only_when_refused). Registered before
    that hook, so Flask runs it after it (after_request functions run in reverse order)."""
    seconds = g.pop("retry_after", None)
    if seconds is not None and response.status_code >= 400:
        response.headers["Retry-After"] = str(seconds)
    return response


def register_error_handlers(app: Flask) -> None:
    """Give every failure, expected or not, the contract's JSON error shape."""
    app.after_request(_keep_retry_after)

    @app.errorhandler(BillingError)
    def _billing_error(exc: BillingError) -> ResponseReturnValue:
        if exc.retry_after is not None:
            ask_to_retry(exc.retry_after)
        return error_response(exc.status, exc.code, exc.message, exc.fields)

    app.register_error_handler(HTTPException, handle_http_exception)

    @app.errorhandler(psycopg.OperationalError)
    def _database_lost(exc: psycopg.OperationalError) -> ResponseReturnValue:
        # The connection broke mid-request (a database restart, a failover): nothing was
        # committed that the caller cannot safely retry, so say "retry", not "bug".
        log.warning("database connection lost in request %s: %s", g.get("request_id", "-"), exc)
        ask_to_retry(ServiceUnavailable.retry_after or 1)
        return error_response(503, ServiceUnavailable.code,
                              "The database connection was lost; retry the request")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> ResponseReturnValue:
        # Logged with the request id; the caller gets the id, never the trace.
        request_id = getattr(g, "request_id", "-")
        log.exception("unhandled error in request %s", request_id)
        return error_response(
            500, "internal_error", f"Internal error (request id {request_id})"
        )
