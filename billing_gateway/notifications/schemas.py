"""Alert settings: shapes."""

from __future__ import annotations

from decimal import Decimal

from marshmallow import Schema, fields, validate

from billing_gateway.notifications.endpoints import EVENT_TYPES
from billing_gateway.platform.schemas import Money, MoneyOut, UtcDateTime, WholeNumber

MAX_EMAILS = 10
MAX_THRESHOLD = Decimal("1000000")


class AlertSettingsRequest(Schema):
    """An org's alert settings, replaced whole."""

    low_balance_threshold = Money(
        places=2, maximum=MAX_THRESHOLD, required=True, allow_none=True,
        data_key="lowBalanceThreshold",
        metadata={"example": 10.00, "description": "Whole cents; null: the deployment default "
                  "(BILLING_LOW_BALANCE_DEFAULT)."})
    emails = fields.List(
        fields.Email(validate=validate.Length(max=254)), required=True,
        validate=validate.Length(max=MAX_EMAILS),
        metadata={"example": ["billing@customer.example"],
                  "description": f"Who gets billing emails; at most {MAX_EMAILS}."})


class AlertSettingsResponse(Schema):
    """The settings in force."""

    org_id = fields.UUID(data_key="orgId", required=True)
    low_balance_threshold = MoneyOut(data_key="lowBalanceThreshold", required=True)
    emails = fields.List(fields.String(), required=True)
    source = fields.String(required=True, metadata={
        "description": "org: the org's own threshold; default: BILLING_LOW_BALANCE_DEFAULT."})


class WebhookEndpointRequest(Schema):
    """A receiver of the platform's money events."""

    url = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                     validate=validate.Length(min=1, max=2048), metadata={
        "example": "https://platform.example/hooks/billing",
        "description": "http(s); private and loopback addresses are refused unless "
                       "BILLING_WEBHOOK_ALLOW_PRIVATE is set."})
    events = fields.List(fields.String(validate=validate.OneOf(EVENT_TYPES)), required=True,
                         validate=validate.Length(min=1, max=len(EVENT_TYPES)),
                         metadata={"example": ["balance.low", "balance.depleted"]})
    description = fields.String(load_default=None, allow_none=True,
                                validate=validate.Length(max=200))


class WebhookEndpointResponse(Schema):
    """An endpoint; `secret` (whsec_...) only in the answer that created it."""

    id = fields.UUID(required=True)
    url = fields.String(required=True)
    events = fields.List(fields.String(), required=True)
    description = fields.String(allow_none=True)
    enabled = fields.Boolean(required=True)
    disabled_reason = fields.String(data_key="disabledReason", allow_none=True)
    created_at = UtcDateTime(data_key="createdAt", required=True)
    secret = fields.String(metadata={"description": "Shown once: store it to verify "
                                     "signatures (Standard Webhooks)."})


class WebhookEndpointList(Schema):
    """Every endpoint, newest first."""

    endpoints = fields.List(fields.Nested(WebhookEndpointResponse), required=True)


class DeliveryAttempt(Schema):
    """One attempt of a delivery."""

    attempt = fields.Integer(required=True)
    at = fields.String(required=True)
    status_code = fields.Integer(data_key="statusCode", allow_none=True)
    error = fields.String(allow_none=True)
    response_ms = fields.Integer(data_key="responseMs", required=True)


class DeliveryResponse(Schema):
    """One event to one endpoint: where it stands, and its attempts."""

    id = fields.UUID(required=True)
    event_id = fields.UUID(data_key="eventId", required=True)
    event_type = fields.String(data_key="eventType", required=True)
    status = fields.String(required=True, metadata={"description": "pending, delivered, failed"})
    attempts = fields.Integer(required=True)
    next_attempt_at = UtcDateTime(data_key="nextAttemptAt", allow_none=True)
    last_attempt_at = UtcDateTime(data_key="lastAttemptAt", allow_none=True)
    last_status = fields.Integer(data_key="lastStatus", allow_none=True)
    last_error = fields.String(data_key="lastError", allow_none=True)
    last_response_ms = fields.Integer(data_key="lastResponseMs", allow_none=True)
    delivered_at = UtcDateTime(data_key="deliveredAt", allow_none=True)
    created_at = UtcDateTime(data_key="createdAt", required=True)
    log = fields.List(fields.Nested(DeliveryAttempt), required=True)


class DeliveryList(Schema):
    """An endpoint's deliveries, newest first."""

    deliveries = fields.List(fields.Nested(DeliveryResponse), required=True)


class DeliveryQuery(Schema):
    """How many deliveries to list."""

    limit = WholeNumber(load_default=50, validate=validate.Range(min=1, max=200))
