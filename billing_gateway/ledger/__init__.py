"""The ledger: credits, balances, history, idempotent writes and the invariants that prove
them. Usage charges and top-ups write to it through its functions."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.ledger import views
from billing_gateway.platform.config import Settings


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /balance, /add-funds and /transactions."""
    for blp in (views.balance_blp, views.funds_blp, views.transactions_blp):
        api.register_blueprint(blp)
