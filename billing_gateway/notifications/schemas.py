"""Alert settings: shapes."""

from __future__ import annotations

from decimal import Decimal

from marshmallow import Schema, fields, validate

from billing_gateway.platform.schemas import Money, MoneyOut

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
