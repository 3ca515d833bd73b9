"""Marshmallow schemas: they validate input, shape output and generate /openapi.json."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from billing_gateway import charges, money, text
from billing_gateway.ledger import CREDIT_TYPES, TRANSACTION_TYPES


class Money(fields.Decimal):
    """A positive exact amount, from a JSON number or a numeric string.

    The bounds and precision are stated in /openapi.json as well (exclusive minimum 0,
    maximum, multipleOf), so a client generating requests from it (schemathesis does)
    never produces an amount the service refuses.
    """

    def __init__(self, *, places: int = money.LEDGER_PLACES,
                 maximum: Decimal = money.MAX_AMOUNT, **kwargs: Any) -> None:
        kwargs.setdefault("validate", validate.Range(min=Decimal(0), min_inclusive=False,
                                                     max=maximum))
        metadata = {"multipleOf": float(Decimal(1).scaleb(-places)), "exclusiveMinimum": True,
                    **kwargs.pop("metadata", {})}
        super().__init__(metadata=metadata, **kwargs)
        self.amount_places = places
        self.amount_maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return money.parse_amount(value, places=self.amount_places,
                                      maximum=self.amount_maximum)
        except money.AmountError as exc:
            raise ValidationError(f"Amount {exc}.") from exc

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Decimal | None:
        return None if value is None else money.to_number(value)


class MoneyOut(fields.Decimal):
    """An amount in a response: a JSON number with 2 decimals, or up to 4 for sub-cent values."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Decimal | None:
        return None if value is None else money.to_number(value)


class WholeNumber(fields.Integer):
    """A whole number from a query string: ASCII digits only (int() takes any script's and "_")."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str):
            try:
                value = money.parse_whole_number(value)
            except money.AmountError as exc:
                raise ValidationError("Not a valid integer.") from exc
        result: int = super()._deserialize(value, attr, data, **kwargs)
        return result


class UtcDateTime(fields.DateTime):
    """A timestamp in ISO 8601 UTC with a Z suffix, as the seed's front end reads it."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        if value is None:
            return None
        return str(value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"))


def _storable(value: str) -> None:
    problem = text.storage_problem(value)
    if problem:
        raise ValidationError(problem)


# The same rule for /openapi.json (no NUL; a lone surrogate is not valid JSON text anyway).
_STORABLE_PATTERN = "^[^\\u0000]*$"


def _text(max_length: int, **kwargs: Any) -> fields.String:
    metadata = {"pattern": _STORABLE_PATTERN, **kwargs.pop("metadata", {})}
    return fields.String(validate=[validate.Length(min=1, max=max_length), _storable],
                         metadata=metadata, **kwargs)


class OrgQuery(Schema):
    """Which org to read; admins and the SMS sender name it, members need not."""

    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admin and service only."})


class BalanceQuery(OrgQuery):
    """Which org to read, and optionally an amount to check the balance against."""

    required = Money(metadata={"description": "Answer whether the balance covers this amount."})


class BalanceResponse(Schema):
    """An org's balance."""

    balance = MoneyOut(required=True)
    sufficient = fields.Boolean(metadata={"description": "Only when `required` was given."})
    formatted = fields.String(required=True, metadata={"example": "$52.88"})
    currency = fields.String(required=True, metadata={"example": "usd"})
    sms_price = MoneyOut(data_key="smsPrice", required=True, metadata={
        "description": "Price per SMS: the org's own, else BILLING_DEFAULT_SMS_PRICE."})


class AddFundsRequest(Schema):
    """A manual credit by a platform admin."""

    amount = Money(places=2, required=True, metadata={"example": 100.00})
    payment_method = _text(50, data_key="paymentMethod", load_default="manual")
    payment_intent_id = _text(
        255, data_key="paymentIntentId",
        metadata={"description": "Credits a purchase once per PaymentIntent."},
    )
    description = _text(1000)
    org_id = fields.UUID(data_key="orgId")
    type = fields.String(load_default="purchase", validate=validate.OneOf(CREDIT_TYPES))


class LedgerWriteResponse(Schema):
    """The ledger row a write produced (or the earlier one a retry found), and the balance."""

    transaction_id = fields.UUID(data_key="transactionId", required=True)
    balance = MoneyOut(required=True)
    formatted = fields.String(required=True)


class AddFundsResponse(LedgerWriteResponse):
    """The credit written (or the earlier one a retry found)."""

    message = fields.String(required=True)

    class Meta:
        # The seed's order: message first.
        fields = ("message", "transaction_id", "balance", "formatted")


class TransactionsQuery(OrgQuery):
    """Paging and filter of the history."""

    limit = WholeNumber(load_default=50, validate=validate.Range(min=1, max=100))
    offset = WholeNumber(load_default=0, validate=validate.Range(min=0, max=10**12))
    type = fields.String(validate=validate.OneOf(TRANSACTION_TYPES))


class DeductRequest(Schema):
    """One SMS charge by the SMS sender."""

    org_id = fields.UUID(data_key="orgId", required=True)
    sms_count = fields.Integer(data_key="smsCount", required=True, strict=True,
                               validate=validate.Range(min=1, max=1_000_000))
    cost_per_sms = Money(data_key="costPerSms", maximum=money.MAX_SMS_PRICE, metadata={
        "description": "Default: the org's price, else BILLING_DEFAULT_SMS_PRICE."})
    message_id = _text(255, data_key="messageId", required=True, metadata={
        "description": "Charged once: a repeat returns the original charge."})
    campaign_id = _text(255, data_key="campaignId")
    description = _text(1000)


class DeductResponse(LedgerWriteResponse):
    """The charge written (or the earlier one a repeated messageId found)."""


class BulkChargeItem(DeductRequest):
    """One item of a bulk charge: the fields of POST /deduct."""


class BulkChargeList(fields.List):
    """The items of a bulk charge, each validated on its own (billing_gateway.charges).

    A bad item becomes an `invalid` outcome instead of failing the request, so the
    description promises no shape for an item: any JSON value is taken, and answered.
    The shape of a valid item is the BulkChargeItem component.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(fields.Raw(metadata={
            "description": "A charge with the fields of POST /deduct (components/schemas/"
                           "BulkChargeItem). Anything else is answered with outcome invalid.",
            "example": {"orgId": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "smsCount": 1,
                        "costPerSms": 0.0075, "messageId": "msg-1"}}), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if not isinstance(value, list):
            raise ValidationError("Not a valid list.")
        return [charges.parse_charge(item) for item in value]


class BulkChargeRequest(Schema):
    """Up to 1,000 charges, each for its own org and message."""

    charges = BulkChargeList(
        required=True, validate=validate.Length(min=1, max=charges.MAX_BULK_ITEMS))


class BulkChargeResult(Schema):
    """What one item did, in request order."""

    index = fields.Integer(required=True, metadata={"description": "0-based item position."})
    outcome = fields.String(required=True, validate=validate.OneOf(
        ("charged", "duplicate", "insufficient_funds", "invalid")))
    transaction_id = fields.UUID(data_key="transactionId", allow_none=True, metadata={
        "description": "The charge (charged), or the original charge (duplicate)."})
    balance = MoneyOut(allow_none=True, metadata={
        "description": "The org's balance after this item (absent for invalid items)."})
    reason = fields.String(metadata={"description": "Why the item is invalid."})
    fields_ = fields.Dict(data_key="fields", metadata={"description": "Errors per field."})


class BulkChargeSummary(Schema):
    """How many items had each outcome."""

    charged = fields.Integer(required=True)
    duplicate = fields.Integer(required=True)
    insufficient_funds = fields.Integer(data_key="insufficientFunds", required=True)
    invalid = fields.Integer(required=True)


class BulkChargeResponse(Schema):
    """The outcome of every item, in request order."""

    results = fields.List(fields.Nested(BulkChargeResult), required=True)
    summary = fields.Nested(BulkChargeSummary, required=True)


class UsageRefundRequest(Schema):
    """Give back the charge of one message."""

    org_id = fields.UUID(data_key="orgId", required=True)
    message_id = _text(255, data_key="messageId", required=True)
    amount = Money(metadata={"description": "Default: the whole charge; never more than it."})
    description = _text(1000)


class PricingRequest(Schema):
    """An org's SMS price; null goes back to the deployment default."""

    sms_price = Money(data_key="smsPrice", required=True, allow_none=True,
                      maximum=money.MAX_SMS_PRICE,
                      metadata={"example": 0.0075})


class PricingResponse(Schema):
    """An org's SMS price and where it comes from."""

    org_id = fields.UUID(data_key="orgId", required=True)
    sms_price = MoneyOut(data_key="smsPrice", required=True, metadata={
        "description": "The price charged per SMS when a charge names none."})
    source = fields.String(required=True, validate=validate.OneOf(("org", "default")))


class Transaction(Schema):
    """One ledger row, with the seed's field names."""

    id = fields.UUID(required=True)
    type = fields.String(required=True)
    amount = MoneyOut(required=True)
    balance_before = MoneyOut(required=True)
    balance_after = MoneyOut(required=True)
    sms_count = fields.Integer(allow_none=True)
    cost_per_sms = MoneyOut(allow_none=True)
    payment_method = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    created_at = UtcDateTime(required=True)
    payment_intent_id = fields.String(allow_none=True)
    message_id = fields.String(allow_none=True)
    campaign_id = fields.String(allow_none=True)
    metadata = fields.Dict(allow_none=True)


class Pagination(Schema):
    """Where this page sits in the whole history."""

    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    has_more = fields.Boolean(data_key="hasMore", required=True)


class TransactionsPage(Schema):
    """A page of history."""

    transactions = fields.List(fields.Nested(Transaction), required=True)
    pagination = fields.Nested(Pagination, required=True)


class CheckoutRequest(Schema):
    """A top-up through Stripe Checkout."""

    amount = Money(places=2, required=True, metadata={
        "example": 50.00,
        "description": "Whole cents, between BILLING_MIN_TOPUP and BILLING_MAX_TOPUP."})
    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admins only."})


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


class ShortfallList(Schema):
    """Every payment with a shortfall, newest first."""

    shortfalls = fields.List(fields.Nested(Shortfall), required=True)


class ErrorDetail(Schema):
    """The error object."""

    code = fields.String(required=True)
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields")


class ErrorResponse(Schema):
    """Every error has this shape."""

    error = fields.Nested(ErrorDetail, required=True)


class Health(Schema):
    """Liveness or readiness."""

    status = fields.String(required=True)
