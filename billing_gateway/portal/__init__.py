"""The customer billing page: one-time portal links, browser sessions, the server-rendered
page (balance, add funds through Checkout, history, spend, CSV) and its HTML errors."""

from __future__ import annotations

from flask import Flask, request
from flask.typing import ResponseReturnValue
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from billing_gateway.platform.config import Settings
from billing_gateway.platform.errors import handle_http_exception
from billing_gateway.portal import filters, pages, security, views


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /api/billing/portal-sessions and the /billing page."""
    api.register_blueprint(views.blp)
    security.configure(app, settings)
    pages.csrf.init_app(app)
    filters.register(app, settings)
    app.register_blueprint(pages.pages)

    def _not_routed(exc: HTTPException) -> ResponseReturnValue:
        # A 404 or 405 from routing belongs to no blueprint: under /billing it is a page.
        if security.is_page_path(request.path):
            return security.add_headers(pages.error_page(exc.code or 404), settings)
        return handle_http_exception(exc)

    app.register_error_handler(404, _not_routed)
    app.register_error_handler(405, _not_routed)
