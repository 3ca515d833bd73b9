"""Checkout top-ups, Stripe's webhook and shortfalls: shapes."""

from __future__ import annotations

from marshmallow import Schema, fields

from billing_gateway.platform.schemas import Money, MoneyOut, StrictBoolean, UtcDateTime


class CheckoutRequest(Schema):
    """A top-up through Stripe Checkout."""

    amount = Money(places=2, required=True, metadata={
        "example": 50.00,
        "description": "Whole cents, between BILLING_MIN_TOPUP and BILLING_MAX_TOPUP."})
    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admins only."})
    save_card = StrictBoolean(data_key="saveCard", load_default=False, metadata={
        "description": "Save the card to the org's Stripe customer for later off-session "
                       "top-ups."})


class CheckoutResponse(Schema):
    """Where to send the customer."""

    session_id = fields.String(data_key="sessionId", required=True,
                               metadata={"example": "cs_test_a1b2c3"})
    url = fields.String(required=True,
                        metadata={"example": "https://checkout.stripe.com/c/pay/cs_test_a1b2c3"})


class WebhookAck(Schema):
    """Stripe's delivery was taken."""

    received = fields.Boolean(required=True)


class Shortfall(Schema):
    """A payment whose refund or lost dispute the balance could not fully cover."""

    payment_intent_id = fields.String(data_key="paymentIntentId", required=True)
    org_id = fields.UUID(data_key="orgId", allow_none=True)
    currency = fields.String(allow_none=True)
    credited_minor = fields.Integer(data_key="creditedMinor", allow_none=True)
    refunded_minor = fields.Integer(data_key="refundedMinor")
    disputed_minor = fields.Integer(data_key="disputedMinor")
    shortfall = MoneyOut(required=True)
    updated_at = UtcDateTime(data_key="updatedAt")


class ReviewItem(Schema):
    """Something Stripe sent that the gateway did not apply and a human must settle: a lost
    dispute in another currency than its payment's (kind dispute_currency_mismatch)."""

    kind = fields.String(required=True, metadata={"example": "dispute_currency_mismatch"})
    dispute_id = fields.String(data_key="disputeId", required=True)
    payment_intent_id = fields.String(data_key="paymentIntentId", required=True)
    org_id = fields.UUID(data_key="orgId", allow_none=True)
    amount_minor = fields.Integer(data_key="amountMinor", required=True)
    currency = fields.String(required=True)
    payment_currency = fields.String(data_key="paymentCurrency", required=True)
    created_at = UtcDateTime(data_key="createdAt")


class ShortfallList(Schema):
    """Every payment with a shortfall, and what needs a human, newest first."""

    shortfalls = fields.List(fields.Nested(Shortfall), required=True)
    needs_review = fields.List(fields.Nested(ReviewItem), data_key="needsReview",
                               required=True)


class DisputeReviewed(Schema):
    """A dispute in another currency, marked settled by a human."""

    dispute_id = fields.String(data_key="disputeId", required=True)
    payment_intent_id = fields.String(data_key="paymentIntentId", required=True)
    reviewed_at = UtcDateTime(data_key="reviewedAt", required=True)
    reviewed_by = fields.String(data_key="reviewedBy", required=True)
