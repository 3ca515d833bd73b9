"""The bare-stack reference of bench/run.py: the same gunicorn settings, a pooled
connection, exactly the SQL of POST /deduct and GET /balance, and the same JSON; no auth,
validation, limits, metrics or logging. A benchmark fixture, never routed in the service.

    gunicorn -c python:billing_gateway.gunicorn_conf 'bench.bare_stack:create_app()'
"""

from __future__ import annotations

import os
import uuid
from decimal import Decimal
from typing import Any

from flask import Flask, Response, request

from billing_gateway.platform import json_codec, money
from billing_gateway.platform.config import load_settings
from billing_gateway.platform.db import make_pool


def create_app() -> Flask:
    """The bare app: two views on one pool sized as the service's."""
    settings = load_settings()
    app = Flask(__name__)
    pool = make_pool(os.environ["DATABASE_URL"], min_size=settings.pool_min_size,
                     max_size=settings.pool_max_size, timeout=settings.pool_timeout,
                     low_balance_default=settings.low_balance_default)
    pool.open()
    currency, price = settings.currency, settings.default_sms_price

    def answer(body: dict[str, Any], status: int) -> Response:
        return Response(json_codec.dumps(body), status=status, mimetype="application/json")

    @app.post("/api/billing/deduct")
    def deduct() -> Response:
        body = json_codec.loads(request.get_data())
        with pool.connection() as conn:
            row = conn.execute(
                "SELECT transaction_id, balance, outcome, price, amount"
                " FROM api_charge(%s, %s, %s, %s, %s, %s, %s, %s)",
                (uuid.UUID(body["orgId"]), "bare", body["smsCount"], body.get("costPerSms"),
                 price, body["messageId"], None, None)).fetchone()
        assert row is not None
        return answer({"transactionId": row[0], "balance": money.to_number(row[1]),
                       "formatted": money.format_display(row[1], currency)}, 201)

    @app.get("/api/billing/balance")
    def balance() -> Response:
        with pool.connection() as conn:
            row = conn.execute("SELECT balance, sms_price FROM api_account(%s, %s)",
                               (uuid.UUID(request.args["orgId"]), "bare")).fetchone()
        assert row is not None
        amount: Decimal = row[0]
        return answer({"balance": money.to_number(amount),
                       "formatted": money.format_display(amount, currency),
                       "currency": currency, "smsPrice": row[1] or price}, 200)

    @app.get("/readyz")
    def ready() -> Response:  # what bench/run.py waits for before measuring
        return answer({"status": "ready"}, 200)

    return app
