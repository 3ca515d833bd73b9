"""HTTP plumbing every domain's views use: /api/billing blueprints, a body parser with exact
decimals."""

from __future__ import annotations

from typing import Any

import flask
from flask_smorest import Blueprint
from webargs import core
from webargs.flaskparser import FlaskParser, is_json_request

from billing_gateway.platform import json_codec
from billing_gateway.platform.errors import ValidationFailed

PREFIX = "/api/billing"


class BillingParser(FlaskParser):
    """webargs parser with exact decimals and the contract's 400 for invalid input."""

    DEFAULT_VALIDATION_STATUS = 400

    def _raw_load_json(self, req: flask.Request) -> Any:
        # webargs parses with the stdlib json, which turns 52.88 into a float; money
        # must stay a Decimal from the first byte.
        if not is_json_request(req):
            return core.missing
        data = req.get_data(cache=True)
        if not data.strip():
            return core.missing
        try:
            return json_codec.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationFailed(f"Request body is not valid JSON: {exc}") from exc


class BillingBlueprint(Blueprint):
    """A flask-smorest blueprint using BillingParser."""

    ARGUMENTS_PARSER = BillingParser()


def blueprint(name: str, description: str) -> BillingBlueprint:
    """Create a blueprint for one resource of the billing API."""
    return BillingBlueprint(name, __name__, url_prefix=PREFIX, description=description)
