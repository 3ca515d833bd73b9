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


# No request of the contract nests deeper than 3; Stripe's events about 10. Deeper bodies
# are refused: code that walks the value (validation, the idempotency fingerprint, the
# encoder) recurses once per level, and at about 1,000 Python stops with RecursionError.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """A JSON value nested deeper than MAX_DEPTH."""


def loads(data: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a Decimal; refuse NaN and deep nesting.

    Every failure is a ValueError (UnicodeDecodeError is one), so callers answer 400.
    """
    try:
        value = simplejson.loads(data, use_decimal=True, parse_constant=_reject_constant)
    except RecursionError as exc:  # the decoder recurses per level
        raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels") from exc
    _check_depth(value)
    return value


def _check_depth(value: Any) -> None:
    """Refuse containers nested deeper than MAX_DEPTH (iteratively: no recursion here)."""
    if not isinstance(value, (dict, list)):
        return
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        container, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
        children = container.values() if isinstance(container, dict) else container
        pending.extend((child, depth + 1) for child in children
                       if isinstance(child, (dict, list)))


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
