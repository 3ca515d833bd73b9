"""Charges, usage refunds and prices: what they take and answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate

from billing_gateway.ledger.schemas import LedgerWriteResponse
from billing_gateway.platform import money
from billing_gateway.platform.schemas import DayRangeQuery, Money, MoneyOut, text_field
from billing_gateway.usage import items, summary


class DeductRequest(Schema):
    """One SMS charge by the SMS sender.

    The fields describe the request in /openapi.json; the request is checked by the one
    set of charge rules, items.parse_charge, which also checks every bulk item (load).
    """

    org_id = fields.UUID(data_key="orgId", required=True)
    sms_count = fields.Integer(data_key="smsCount", required=True, strict=True,
                               validate=validate.Range(min=1, max=items.MAX_SMS_COUNT))
    cost_per_sms = Money(data_key="costPerSms", maximum=money.MAX_SMS_PRICE, metadata={
        "description": "Default: the org's price, else BILLING_DEFAULT_SMS_PRICE."})
    message_id = text_field(items.MAX_ID_LENGTH, data_key="messageId", required=True,
                            metadata={"description": "Charged once: a repeat returns the "
                                                     "original charge."})
    campaign_id = text_field(items.MAX_ID_LENGTH, data_key="campaignId")
    description = text_field(items.MAX_DESCRIPTION_LENGTH)

    def load(self, data: Any, *, many: bool | None = None, partial: Any = None,
             unknown: str | None = None) -> dict[str, Any]:
        """Check the charge with items.parse_charge and return it as the view reads it."""
        if many or partial:
            raise NotImplementedError("a charge request is one whole charge")
        charge = items.parse_charge(data)
        if isinstance(charge, items.InvalidCharge):
            raise ValidationError(charge.fields)
        return {"org_id": charge.org_id, "sms_count": charge.sms_count,
                "cost_per_sms": charge.cost_per_sms, "message_id": charge.message_id,
                "campaign_id": charge.campaign_id, "description": charge.description}


class DeductResponse(LedgerWriteResponse):
    """The charge written (or the earlier one a repeated messageId found)."""


class BulkChargeItem(DeductRequest):
    """One item of a bulk charge: the fields of POST /deduct."""


class BulkChargeList(fields.List):
    """The items of a bulk charge, each validated on its own (usage.items.parse_charge).

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
        return [items.parse_charge(item) for item in value]


class BulkChargeRequest(Schema):
    """Up to 1,000 charges, each for its own org and message."""

    charges = BulkChargeList(
        required=True, validate=validate.Length(min=1, max=items.MAX_BULK_ITEMS))


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
    message_id = text_field(255, data_key="messageId", required=True)
    amount = Money(metadata={"description": "Default: the whole charge; never more than it."})
    description = text_field(1000)


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


class UsageSummaryQuery(DayRangeQuery):
    """The range and grouping of a usage summary; the range defaults to the last 30 UTC days."""

    group_by = fields.String(data_key="groupBy", load_default=summary.GroupBy.DAY,
                             validate=validate.OneOf([g.value for g in summary.GroupBy]))

    @post_load
    def _range(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        try:
            data["start"], data["end"] = summary.day_range(
                data.get("start"), data.get("end"), today=dt.datetime.now(dt.UTC).date())
        except summary.RangeTooLong as exc:
            raise ValidationError(str(exc), "to") from exc
        except summary.RangeReversed as exc:
            raise ValidationError(str(exc), "from") from exc
        return data


class UsageItem(Schema):
    """The usage of one UTC day (groupBy=day) or one campaign (groupBy=campaign)."""

    date = fields.Date(metadata={"description": "groupBy=day: the UTC day."})
    campaign_id = fields.String(data_key="campaignId", allow_none=True, metadata={
        "description": "groupBy=campaign: the campaign; null for usage without one."})
    sms_count = fields.Integer(data_key="smsCount", required=True)
    amount = MoneyOut(required=True, metadata={
        "description": "Charged net of usage refunds, exact."})


class UsageTotal(Schema):
    """The usage of the whole range."""

    sms_count = fields.Integer(data_key="smsCount", required=True)
    amount = MoneyOut(required=True)


class UsageSummaryResponse(Schema):
    """An org's usage over a range of UTC days."""

    currency = fields.String(required=True, metadata={"example": "usd"})
    group_by = fields.String(data_key="groupBy", required=True)
    start = fields.Date(data_key="from", required=True)
    end = fields.Date(data_key="to", required=True)
    items = fields.List(fields.Nested(UsageItem), required=True)
    total = fields.Nested(UsageTotal, required=True)
