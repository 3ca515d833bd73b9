"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from billing_gateway.platform.db import get_pool
from billing_gateway.platform.errors import ServiceUnavailable
from billing_gateway.platform.schemas import Health

blp = Blueprint("health", __name__, description="Probes for load balancers and orchestrators.")


@blp.route("/healthz", methods=["GET"])
@blp.response(200, Health)
@blp.doc(security=[])
def healthz() -> dict[str, Any]:
    """Answer while the process is up (touches nothing else)."""
    return {"status": "ok"}


@blp.route("/readyz", methods=["GET"])
@blp.response(200, Health)
@blp.doc(security=[])
def readyz() -> dict[str, Any]:
    """Answer 200 when the database answers, 503 otherwise."""
    try:
        with get_pool().connection(timeout=2.0) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        raise ServiceUnavailable("The database is not reachable") from exc
    return {"status": "ready"}
