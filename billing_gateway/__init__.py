"""billing-gateway: prepaid SMS credit balances with Stripe top-ups.

`create_app` lives in billing_gateway.app and is imported only when asked for, so that
`import billing_gateway.client` (the SMS sender's client) loads no Flask and no server code.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    """Resolve `billing_gateway.create_app` on first use (PEP 562)."""
    if name == "create_app":
        from billing_gateway.app import create_app

        return create_app
    raise AttributeError(f"module 'billing_gateway' has no attribute {name!r}")
