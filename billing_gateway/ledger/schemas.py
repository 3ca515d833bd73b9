"""Balance, credits and history: what they take and what they answer."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing_gateway.ledger.credits import CREDIT_TYPES, TRANSACTION_TYPES
from billing_gateway.platform.schemas import (
    DayRangeQuery,
    Money,
    MoneyOut,
    OrgQuery,
    UtcDateTime,
    WholeNumber,
    text_field,
)


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
    payment_method = text_field(50, data_key="paymentMethod", load_default="manual")
    payment_intent_id = text_field(
        255, data_key="paymentIntentId",
        metadata={"description": "Credits a purchase once per PaymentIntent."},
    )
    description = text_field(1000)
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


class TransactionsCsvQuery(DayRangeQuery):
    """Which transactions to export: UTC days `from` to `to` (both included), one type."""

    type = fields.String(validate=validate.OneOf(TRANSACTION_TYPES))


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
