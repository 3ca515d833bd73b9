"""A small Python client for the billing API, with typed errors and safe retries.

    from billing_gateway.client import BillingClient, InsufficientFunds

    billing = BillingClient("http://127.0.0.1:8000", token)
    try:
        billing.deduct(org_id, message_id="msg-42", sms_count=1)
    except InsufficientFunds:
        ...

Every POST carries an Idempotency-Key (the caller's, or a fresh one per call), so a retry
after a lost answer or a 5xx replays the first result instead of charging twice. Amounts
go out and come back as Decimal, never float.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

import requests
import simplejson

# This module imports nothing of the server (no Flask, no database driver): the SMS sender
# installs it with `requests` and `simplejson` alone (README, "For the SMS sender").


def _loads(data: bytes) -> Any:
    """Parse an answer with every non-integer number as a Decimal (NaN and Infinity refused)."""
    try:
        return simplejson.loads(data, use_decimal=True, parse_constant=_not_a_number)
    except RecursionError as exc:  # nested past Python's limit: not an answer of ours
        raise ValueError("JSON nested too deeply") from exc


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _dumps(body: Any) -> str:
    """Write a body with Decimal as a JSON number (never a float) and UUIDs as strings."""
    return simplejson.dumps(body, use_decimal=True, allow_nan=False, separators=(",", ":"),
                            default=_uuid_text)


def _uuid_text(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

API_PREFIX = "/api/billing"
# Answers worth retrying: the request may not have been applied, or was applied and its
# answer lost; the Idempotency-Key makes the retry harmless either way.
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class BillingError(Exception):
    """An error answer of the billing API: its code, HTTP status, message and field errors."""

    code = "internal_error"

    def __init__(self, message: str, *, status: int | None = None,
                 fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.fields = dict(fields or {})


class ValidationError(BillingError):
    """400: the request's input is invalid (see `fields`)."""

    code = "validation_error"


class Unauthorized(BillingError):
    """401: the token is missing, expired or not valid."""

    code = "unauthorized"


class InsufficientFunds(BillingError):
    """402: the balance does not cover the charge; nothing was charged."""

    code = "insufficient_funds"


class Forbidden(BillingError):
    """403: the token's role may not do this."""

    code = "forbidden"


class NotFound(BillingError):
    """404: no such resource (for a usage refund: no charge for that message)."""

    code = "not_found"


class IdempotencyConflict(BillingError):
    """409: the Idempotency-Key (or PaymentIntent) was used for a different request."""

    code = "idempotency_conflict"


class PayloadTooLarge(BillingError):
    """413: the request body is too large."""

    code = "payload_too_large"


class RateLimited(BillingError):
    """429: too many requests; still refused after the retries."""

    code = "rate_limited"


class PaymentProviderError(BillingError):
    """502: Stripe refused or failed."""

    code = "payment_provider_error"


class StripeNotConfigured(BillingError):
    """503: the gateway has no Stripe key."""

    code = "stripe_not_configured"


class ServiceUnavailable(BillingError):
    """503: the gateway cannot reach its database."""

    code = "service_unavailable"


class ConnectionFailed(BillingError):
    """No answer at all (connection refused, reset or timed out), after every retry."""

    code = "connection_failed"


_ERRORS: dict[str, type[BillingError]] = {
    cls.code: cls for cls in (
        ValidationError, Unauthorized, InsufficientFunds, Forbidden, NotFound,
        IdempotencyConflict, PayloadTooLarge, RateLimited, PaymentProviderError,
        StripeNotConfigured, ServiceUnavailable,
    )
}


def _error_from(response: requests.Response) -> BillingError:
    try:
        error = _loads(response.content)["error"]
        code, message, fields = error["code"], error["message"], error.get("fields")
    except (ValueError, KeyError, TypeError):
        code, message, fields = "internal_error", response.text[:200], None
    return _ERRORS.get(code, BillingError)(message, status=response.status_code, fields=fields)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class BillingClient:
    """The billing API for one token: customers, admins or the SMS sender."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, retries: int = 3,
                 backoff: float = 0.2, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    # -- reading -------------------------------------------------------------------------

    def get_balance(self, org_id: uuid.UUID | str | None = None,
                    required: Decimal | str | None = None) -> dict[str, Any]:
        """Balance of the token's org (or `org_id`, for admins and the SMS sender)."""
        return self._request("GET", "/balance", params=_drop_none(
            {"orgId": org_id, "required": required}))

    def get_transactions(self, *, limit: int = 50, offset: int = 0, type: str | None = None,
                         org_id: uuid.UUID | str | None = None) -> dict[str, Any]:
        """One page of history, newest first: {"transactions": [...], "pagination": {...}}."""
        return self._request("GET", "/transactions", params=_drop_none(
            {"limit": limit, "offset": offset, "type": type, "orgId": org_id}))

    def iter_transactions(self, *, type: str | None = None,
                          org_id: uuid.UUID | str | None = None,
                          page_size: int = 100) -> Iterator[dict[str, Any]]:
        """Every transaction, newest first, page after page.

        Rows written while iterating push older rows to later offsets; ids already
        yielded are skipped, so each transaction comes once.
        """
        seen: set[str] = set()
        offset = 0
        while True:
            page = self.get_transactions(limit=page_size, offset=offset, type=type,
                                         org_id=org_id)
            for transaction in page["transactions"]:
                if transaction["id"] not in seen:
                    seen.add(transaction["id"])
                    yield transaction
            if not page["pagination"]["hasMore"]:
                return
            offset += len(page["transactions"])

    # -- writing -------------------------------------------------------------------------

    def add_funds(self, amount: Decimal | str, *, org_id: uuid.UUID | str | None = None,
                  type: str | None = None, payment_method: str | None = None,
                  payment_intent_id: str | None = None, description: str | None = None,
                  idempotency_key: str | None = None) -> dict[str, Any]:
        """Credit an org (admins)."""
        return self._post("/add-funds", _drop_none({
            "amount": amount, "orgId": org_id, "type": type, "paymentMethod": payment_method,
            "paymentIntentId": payment_intent_id, "description": description,
        }), idempotency_key)

    def create_checkout(self, amount: Decimal | str, *,
                        idempotency_key: str | None = None) -> dict[str, Any]:
        """Start a Stripe Checkout top-up: {"sessionId", "url"}."""
        return self._post("/create-checkout", {"amount": amount}, idempotency_key)

    def deduct(self, org_id: uuid.UUID | str, message_id: str, sms_count: int = 1, *,
               cost_per_sms: Decimal | str | None = None, campaign_id: str | None = None,
               description: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Charge a message (the SMS sender). Raises InsufficientFunds when it does not fit."""
        return self._post("/deduct", _drop_none({
            "orgId": org_id, "messageId": message_id, "smsCount": sms_count,
            "costPerSms": cost_per_sms, "campaignId": campaign_id, "description": description,
        }), idempotency_key)

    def deduct_bulk(self, charges: Iterable[Mapping[str, Any]], *,
                    idempotency_key: str | None = None) -> dict[str, Any]:
        """Charge up to 1,000 messages; each item has the fields of `deduct` in API names
        (orgId, messageId, smsCount, costPerSms?, ...). Returns per-item outcomes."""
        return self._post("/deduct/bulk", {"charges": list(charges)}, idempotency_key)

    def refund_usage(self, org_id: uuid.UUID | str, message_id: str, *,
                     amount: Decimal | str | None = None, description: str | None = None,
                     idempotency_key: str | None = None) -> dict[str, Any]:
        """Give back a message's charge (once; at most what was charged)."""
        return self._post("/usage/refund", _drop_none({
            "orgId": org_id, "messageId": message_id, "amount": amount,
            "description": description,
        }), idempotency_key)

    def set_sms_price(self, org_id: uuid.UUID | str,
                      sms_price: Decimal | str | None) -> dict[str, Any]:
        """Set an org's SMS price (admins); None goes back to the deployment default."""
        return self._request("PUT", f"/orgs/{org_id}/pricing", body={"smsPrice": sms_price})

    # -- transport -----------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        # One key for every attempt of this call: that is what makes the retry safe.
        return self._request("POST", path, body=body, idempotency_key=key or str(uuid.uuid4()))

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                 body: Any = None, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = _dumps(body)
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = f"{self.base_url}{API_PREFIX}{path}"
        params = {key: str(value) for key, value in (params or {}).items()}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.session.request(method, url, params=params, data=data,
                                                headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    raise ConnectionFailed(f"No answer from {self.base_url}: {exc}") from exc
                self._sleep(attempt, None)
                continue
            if response.status_code in _RETRY_STATUSES and not last:
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            result: dict[str, Any] = _loads(response.content)
            return result
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** attempt
        if retry_after is not None and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(delay)
