"""JSON that keeps money exact: Decimal in, Decimal out as a JSON number, never a float."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import simplejson
from flask.json.provider import JSONProvider


def _reject_constant(name: str) -> Any:
    """Refuse NaN and Infinity, which are not JSON and not money."""
    raise ValueError(f"{name} is not allowed in JSON")


def loads(data: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a Decimal."""
    return simplejson.loads(data, use_decimal=True, parse_constant=_reject_constant)


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, **kwargs: Any) -> str:
    """Serialize with Decimal as a JSON number (52.88, not "52.88" nor 52.879999)."""
    kwargs.setdefault("use_decimal", True)
    kwargs.setdefault("allow_nan", False)
    kwargs.setdefault("default", _default)
    kwargs.setdefault("separators", (",", ":"))
    return simplejson.dumps(value, **kwargs)


class DecimalJSONProvider(JSONProvider):
    """Flask's JSON provider, backed by simplejson with exact decimals."""

    mimetype = "application/json"

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialize for responses."""
        return dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse request bodies."""
        return loads(s)
