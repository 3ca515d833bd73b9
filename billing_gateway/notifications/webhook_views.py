"""The admin API of outbound webhooks: endpoints, their deliveries, a manual retry."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import Response, current_app

from billing_gateway.notifications import endpoints, receivers, signing
from billing_gateway.notifications.schemas import (
    DeliveryList,
    DeliveryQuery,
    DeliveryResponse,
    WebhookEndpointList,
    WebhookEndpointRequest,
    WebhookEndpointResponse,
)
from billing_gateway.platform.auth import ADMIN, current_caller, require_role
from billing_gateway.platform.db import get_db, notifications_transaction
from billing_gateway.platform.errors import NotFound, ValidationFailed
from billing_gateway.platform.http import blueprint

blp = blueprint("webhook-endpoints", "Outbound webhooks: where the platform's money events go.")


def _not_found(endpoint_id: UUID) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id}")


@blp.route("/webhook-endpoints", methods=["POST"])
@require_role(ADMIN)
@blp.arguments(WebhookEndpointRequest)
@blp.response(201, WebhookEndpointResponse)
def create_endpoint(args: dict[str, Any]) -> dict[str, Any]:
    """Add a receiver; the answer holds its signing secret, shown this once."""
    settings = current_app.config["BILLING_SETTINGS"]
    try:
        url = receivers.check_receiver_url(args["url"],
                                           allow_private=settings.webhook_allow_private)
    except receivers.ReceiverRefused as exc:
        raise ValidationFailed("The webhook URL is refused", fields={"url": [str(exc)]}) from exc
    secret = signing.new_secret()
    events = list(dict.fromkeys(args["events"]))
    with notifications_transaction(get_db(), current_caller().subject) as conn:
        created = endpoints.create(conn, url=url, events=events, secret=secret,
                                   description=args["description"],
                                   created_by=current_caller().subject)
    return {**vars(created), "secret": secret}


@blp.route("/webhook-endpoints", methods=["GET"])
@require_role(ADMIN)
@blp.response(200, WebhookEndpointList)
def list_endpoints() -> dict[str, Any]:
    """List the receivers, newest first (never their secrets)."""
    with notifications_transaction(get_db(), current_caller().subject) as conn:
        return {"endpoints": [vars(found) for found in endpoints.listed(conn)]}


@blp.route("/webhook-endpoints/<uuid:endpoint_id>", methods=["DELETE"])
@require_role(ADMIN)
@blp.response(204)
def delete_endpoint(endpoint_id: UUID) -> Response:
    """Stop sending to a receiver; its delivery log stays readable."""
    with notifications_transaction(get_db(), current_caller().subject) as conn:
        if not endpoints.delete(conn, endpoint_id):
            raise _not_found(endpoint_id)
    return Response(status=204)


@blp.route("/webhook-endpoints/<uuid:endpoint_id>/deliveries", methods=["GET"])
@require_role(ADMIN)
@blp.arguments(DeliveryQuery, location="query")
@blp.response(200, DeliveryList)
def list_deliveries(args: dict[str, Any], endpoint_id: UUID) -> dict[str, Any]:
    """The receiver's deliveries, newest first, each with every attempt."""
    with notifications_transaction(get_db(), current_caller().subject) as conn:
        found = endpoints.deliveries(conn, endpoint_id, args["limit"])
        if not found and not endpoints.exists(conn, endpoint_id):
            raise _not_found(endpoint_id)
    return {"deliveries": found}


@blp.route("/webhook-endpoints/<uuid:endpoint_id>/deliveries/<uuid:delivery_id>/retry",
           methods=["POST"])
@require_role(ADMIN)
@blp.response(202, DeliveryResponse)
def retry_delivery(endpoint_id: UUID, delivery_id: UUID) -> dict[str, Any]:
    """Send a delivery again now (the same webhook-id), whatever came of it before."""
    with notifications_transaction(get_db(), current_caller().subject) as conn:
        found = endpoints.retry(conn, endpoint_id, delivery_id)
    if found is None:
        raise NotFound(f"No delivery {delivery_id} for webhook endpoint {endpoint_id}")
    return found
