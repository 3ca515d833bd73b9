"""Stripe top-ups: Checkout sessions for customers, the signed webhook, shortfalls for admins."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, current_app, request

from billing_gateway.ledger.writes import ledger_write, stored_answer
from billing_gateway.platform import rate_limits
from billing_gateway.platform.auth import ADMIN, MEMBER, current_caller, require_role, resolve_org
from billing_gateway.platform.db import get_db, stripe_transaction
from billing_gateway.platform.errors import NotFound, ValidationFailed
from billing_gateway.platform.http import blueprint
from billing_gateway.topups import checkout, payments, saved_cards, start, webhook_events
from billing_gateway.topups.schemas import (
    CheckoutRequest,
    CheckoutResponse,
    DisputeReviewed,
    ShortfallList,
    WebhookAck,
)

blp = blueprint("stripe", "Top-ups through Stripe Checkout, and Stripe's webhook.")
_CHECKOUT = CheckoutResponse()


@blp.route("/create-checkout", methods=["POST"])
@require_role(MEMBER, ADMIN)
@blp.arguments(CheckoutRequest)
@blp.response(201, CheckoutResponse)
@blp.alt_response(409, description="The Idempotency-Key was used for another top-up, is "
                  "still in progress, or its Checkout Session expired or its payment failed "
                  "(idempotency_conflict: start a new top-up with a new key).")
@blp.alt_response(502, description="Stripe refused, failed or did not answer in time "
                  "(payment_provider_error).")
@blp.alt_response(503, description="No STRIPE_SECRET_KEY (stripe_not_configured), or too "
                  "many top-ups waiting on Stripe (service_unavailable, with Retry-After).")
def create_checkout(args: dict[str, Any]) -> Response:
    """Start a top-up: a Stripe Checkout Session for `amount`, credited when paid.

    No transaction or pooled connection is held while Stripe is waited on
    (billing_gateway.topups.checkout): a slow Stripe delays top-ups, never charges.
    """
    settings = current_app.config["BILLING_SETTINGS"]
    start.check_amount(settings, args["amount"])
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    topup = checkout.TopUpRequest(
        org, args["amount"], settings.currency, caller.subject,
        start.stripe_idempotency_key(caller.subject, org, request.headers.get("Idempotency-Key"),
                                     args["save_card"]),
        save_card=args["save_card"])
    session = start.create_session(
        settings, topup,
        replay=lambda conn: start.payable_replay(conn, org, stored_answer(conn, org)))
    if isinstance(session, Response):
        return session
    # Claims the key with the answer; a retry that stored its answer first is replayed.
    with ledger_write(org) as write:
        if write.replay is not None:
            return write.replay
        checkout.record_session(write.conn, topup, session)
        return write.respond(201, _CHECKOUT.dump(
            {"session_id": session["id"], "url": session["url"]}))


@blp.route("/stripe-webhook", methods=["POST"])
@blp.doc(
    # No JWT: the signature proves the sender (and a fuzzer cannot forge one).
    security=[],
    parameters=[{"in": "header", "name": "Stripe-Signature", "required": True,
                 "schema": {"type": "string"},
                 "description": "t=<unix time>,v1=<HMAC-SHA256 of \"{t}.{body}\">"}],
    requestBody={"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "A Stripe Event object, exactly as Stripe sent it.",
        "required": ["id", "type", "data"]}}}},
)
@blp.response(200, WebhookAck)
@blp.alt_response(400, description="Signature missing or wrong, or not a Stripe event.")
@blp.alt_response(500, description="Processing failed and was rolled back; Stripe retries.")
def stripe_webhook() -> dict[str, bool]:
    """Stripe's events (no JWT: the Stripe-Signature header proves them).

    Each event is applied once, with its ledger effect, in one transaction; a repeat is
    acknowledged and changes nothing.
    """
    settings = current_app.config["BILLING_SETTINGS"]
    # The raw bytes, before anything parses them: the signature covers exactly these.
    raw = request.get_data(cache=False)
    try:
        event = webhook_events.verify(raw, request.headers.get("Stripe-Signature"),
                                     settings.stripe_webhook_secrets)
    except ValidationFailed:
        # Only failed verifications count against the address: a flood of forged
        # deliveries is cut off without ever holding back a signed one.
        rate_limits.forged_delivery()
        raise
    # A card saved by this payment is read from Stripe first, with no connection held.
    card = saved_cards.card_to_save(lambda: start.app_stripe_client(settings),
                              event["data"]["object"])
    webhook_events.process(get_db(), event, settings.currency, card)
    return {"received": True}


@blp.route("/payments/shortfalls", methods=["GET"])
@require_role(ADMIN)
@blp.response(200, ShortfallList)
def list_shortfalls() -> dict[str, Any]:
    """Payments refunded or lost in dispute after their credits were spent: the part the
    balance could not cover (the reversal took what was there); and lost disputes in
    another currency than their payment's, not taken back, for a human to settle."""
    with stripe_transaction(get_db()) as conn:
        return {"shortfalls": payments.shortfalls(conn),
                "needs_review": payments.needs_review(conn)}


# Stripe's ids: a prefix and letters or digits (anything else names no dispute).
_DISPUTE_ID = re.compile(r"^du_[A-Za-z0-9]{1,250}$")


@blp.route("/payments/disputes/<string:dispute_id>/reviewed", methods=["POST"])
@require_role(ADMIN)
@blp.response(200, DisputeReviewed)
@blp.alt_response(404, description="No dispute in another currency has this id.")
def mark_dispute_reviewed(dispute_id: str) -> dict[str, Any]:
    """Mark a lost dispute in another currency as settled by hand (say, with an adjustment):
    it leaves needsReview and no longer fails `billing-gateway reconcile`. Marking it again
    keeps the first review."""
    if not _DISPUTE_ID.match(dispute_id):
        raise NotFound("No dispute in another currency has this id")
    with stripe_transaction(get_db()) as conn:
        reviewed = payments.mark_reviewed(conn, dispute_id, current_caller().subject)
    if reviewed is None:
        raise NotFound("No dispute in another currency has this id")
    return reviewed
