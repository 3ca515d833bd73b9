"""Auto top-up settings: shapes."""

from __future__ import annotations

from marshmallow import Schema, fields

from billing_gateway.platform import money
from billing_gateway.platform.schemas import (
    Money,
    MoneyOut,
    StrictBoolean,
    UtcDateTime,
)


class AutoTopUpRequest(Schema):
    """Turn auto top-up on or off; amounts left out keep their values."""

    enabled = StrictBoolean(required=True)
    threshold = Money(places=2, maximum=money.MAX_AMOUNT, load_default=None, allow_none=True,
                      metadata={"example": 10.00, "description": (
                          "Whole cents. A charge taking the balance below it starts a "
                          "top-up.")})
    target_balance = Money(places=2, maximum=money.MAX_AMOUNT, data_key="targetBalance",
                           load_default=None, allow_none=True, metadata={
        "example": 50.00, "description": (
            "Whole cents: the balance a top-up brings the org back to; above the threshold "
            "by at least BILLING_MIN_TOPUP, and at most BILLING_MAX_TOPUP.")})
    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admins only."})


class SavedCardOut(Schema):
    """The saved card, as a customer recognizes it."""

    brand = fields.String(required=True)
    last4 = fields.String(required=True)
    exp_month = fields.Integer(data_key="expMonth", required=True)
    exp_year = fields.Integer(data_key="expYear", required=True)


class AttemptOut(Schema):
    """One auto top-up and how it ended (pending and submitted: still in flight)."""

    id = fields.UUID(required=True)
    status = fields.String(required=True, metadata={
        "description": "pending, submitted, succeeded, failed or canceled."})
    amount = MoneyOut(required=True)
    balance_at_trigger = MoneyOut(data_key="balanceAtTrigger", required=True)
    payment_intent_id = fields.String(data_key="paymentIntentId", allow_none=True)
    failure_code = fields.String(data_key="failureCode", allow_none=True, metadata={
        "description": "Stripe's code: card_declined, authentication_required, "
                       "expired_card, ...; stripe_unavailable after Stripe could not answer."})
    decline_code = fields.String(data_key="declineCode", allow_none=True)
    failure_message = fields.String(data_key="failureMessage", allow_none=True)
    created_at = UtcDateTime(data_key="createdAt", required=True)
    finished_at = UtcDateTime(data_key="finishedAt", allow_none=True)


class AutoTopUpResponse(Schema):
    """The settings in force, the saved card and the last attempt."""

    org_id = fields.UUID(data_key="orgId", required=True)
    enabled = fields.Boolean(required=True)
    paused = fields.Boolean(required=True, metadata={
        "description": "Paused after repeated failures until the customer pays with a card "
                       "(saving it) or turns it on again."})
    paused_reason = fields.String(data_key="pausedReason", allow_none=True)
    threshold = MoneyOut(allow_none=True, required=True)
    target_balance = MoneyOut(data_key="targetBalance", allow_none=True, required=True)
    consecutive_failures = fields.Integer(data_key="consecutiveFailures", required=True)
    next_attempt_not_before = UtcDateTime(data_key="nextAttemptNotBefore", allow_none=True)
    payment_method = fields.Nested(SavedCardOut, data_key="paymentMethod", allow_none=True,
                                   required=True)
    last_attempt = fields.Nested(AttemptOut, data_key="lastAttempt", allow_none=True,
                                 required=True)


class CardRemoved(Schema):
    """The card is detached at Stripe and forgotten; auto top-up is off."""

    removed = fields.Boolean(required=True)

