"""Schema fields every domain uses (money, text, time) and the error and health shapes."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from billing_gateway.platform import money, text


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


class UtcDate(fields.Date):
    """A day as YYYY-MM-DD in ASCII digits, read as a UTC day (fromisoformat also takes
    "20240101" and week dates, which no caller of ours means)."""

    _TEXT = "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"pattern": self._TEXT, "example": "2026-01-31",
                                   **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        if not isinstance(value, str) or not re.fullmatch(self._TEXT, value, re.ASCII):
            raise ValidationError("Not a valid date: YYYY-MM-DD.")
        result: dt.date = super()._deserialize(value, attr, data, **kwargs)
        return result


def _storable(value: str) -> None:
    problem = text.storage_problem(value)
    if problem:
        raise ValidationError(problem)


# The same rule for /openapi.json (no NUL; a lone surrogate is not valid JSON text anyway).
_STORABLE_PATTERN = "^[^\\u0000]*$"


def text_field(max_length: int, **kwargs: Any) -> fields.String:
    """A text field of at most max_length characters that PostgreSQL can store."""
    metadata = {"pattern": _STORABLE_PATTERN, **kwargs.pop("metadata", {})}
    return fields.String(validate=[validate.Length(min=1, max=max_length), _storable],
                         metadata=metadata, **kwargs)


class StrictBoolean(fields.Boolean):
    """true or false only: marshmallow's Boolean also takes 0, 1, "yes", "on"..."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise ValidationError("Not a valid boolean.")
        return value


class OrgQuery(Schema):
    """Which org to read; admins and the SMS sender name it, members need not."""

    org_id = fields.UUID(data_key="orgId", metadata={"description": "Admin and service only."})


class DayRangeQuery(OrgQuery):
    """Which org, and a range of UTC days: `from` and `to` both included."""

    start = UtcDate(data_key="from", metadata={"description": "First UTC day (included)."})
    end = UtcDate(data_key="to", metadata={"description": "Last UTC day (included)."})

    @validates_schema
    def _start_not_after_end(self, data: dict[str, Any], **kwargs: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and start > end:
            raise ValidationError("Must not be after `to`.", "from")


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
