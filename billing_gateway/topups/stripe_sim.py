"""stripe-sim: a local stand-in for the part of Stripe's API this service uses, so the whole
payment flow runs on a machine with no Stripe account. Never for production.

It answers what the gateway's normal code sends through STRIPE_API_BASE (nothing in the
gateway knows it is talking to a simulator): Checkout Sessions created (with the
Idempotency-Key honoured), retrieved and listed, PaymentIntents listed and retrieved. A
session's `url` is a page of its own with "Pay" and "Cancel"; "Pay" makes a succeeded
PaymentIntent and sends `checkout.session.completed` and `payment_intent.succeeded`, signed
as Stripe signs (t=..., v1=HMAC-SHA256 of "{t}.{body}"), to the gateway's webhook, then
returns the customer to the session's success URL. Objects keep the fields of Stripe's own
that the gateway reads (https://docs.stripe.com/api/checkout/sessions/object).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import itertools
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import requests
from flask import Flask, Response, abort, redirect, request

from billing_gateway.platform import money


def _nested(form: list[tuple[str, str]]) -> dict[str, Any]:
    """Turn Stripe's form encoding (a[b][0][c]=v) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in form:
        parts = key.replace("]", "").split("[")
        node: Any = root
        for part, following in itertools.pairwise(parts):
            container: Any = [] if following.isdigit() else {}
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(container)
                node = node[index]
            else:
                node = node.setdefault(part, container)
        last = parts[-1]
        if isinstance(node, list):
            node.append(value)
        else:
            node[last] = value
    return root


def _sign(body: bytes, secret: str) -> str:
    """A Stripe-Signature header for `body`: https://docs.stripe.com/webhooks#verify-manually"""
    timestamp = int(time.time())
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _list(url: str, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A page of Stripe's list shape, newest first, honouring limit and starting_after."""
    newest = sorted(objects, key=lambda o: o["created"], reverse=True)
    since = request.args.get("created[gte]")
    if since is not None:
        newest = [o for o in newest if o["created"] >= int(since)]
    after = request.args.get("starting_after")
    if after is not None:
        ids = [o["id"] for o in newest]
        newest = newest[ids.index(after) + 1:] if after in ids else []
    limit = int(request.args.get("limit", "10"))
    return {"object": "list", "url": url, "data": newest[:limit],
            "has_more": len(newest) > limit}


@dataclass
class StripeSim:
    """The simulator's state and its Flask app."""

    public_url: str
    webhook_url: str
    webhook_secret: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_session(self, params: dict[str, Any], key: str | None) -> dict[str, Any]:
        """Create (or, for a known Idempotency-Key, return) a Checkout Session."""
        with self.lock:
            if key and key in self.by_key:
                return self.sessions[self.by_key[key]]
            item = params["line_items"][0]
            price = item["price_data"]
            amount = int(price["unit_amount"]) * int(item.get("quantity", "1"))
            session_id = f"cs_test_sim_{secrets.token_hex(12)}"
            now = int(time.time())
            session = {
                "id": session_id, "object": "checkout.session", "mode": params.get("mode"),
                "amount_subtotal": amount, "amount_total": amount,
                "currency": price["currency"], "status": "open",
                "payment_status": "unpaid", "payment_intent": None,
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata", {}),
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "created": now, "expires_at": now + 24 * 3600, "livemode": False,
                "url": f"{self.public_url}/pay/{session_id}",
                # Kept for "Pay": what the PaymentIntent will carry.
                "_intent_metadata": params.get("payment_intent_data", {}).get("metadata", {}),
                "_product": price.get("product_data", {}).get("name", ""),
            }
            self.sessions[session_id] = session
            if key:
                self.by_key[key] = session_id
            return session

    def pay(self, session_id: str) -> dict[str, Any]:
        """Pay an open session: a succeeded PaymentIntent, then Stripe's two events."""
        with self.lock:
            session = self.sessions[session_id]
            if session["status"] == "open":
                now = int(time.time())
                intent = {
                    "id": f"pi_sim_{secrets.token_hex(12)}", "object": "payment_intent",
                    "amount": session["amount_total"],
                    "amount_received": session["amount_total"],
                    "currency": session["currency"], "status": "succeeded",
                    "metadata": session["_intent_metadata"], "created": now,
                    "livemode": False,
                }
                self.intents[intent["id"]] = intent
                session.update(status="complete", payment_status="paid",
                               payment_intent=intent["id"])
                events = [("checkout.session.completed", public(session)),
                          ("payment_intent.succeeded", intent)]
            else:
                events = []
        for kind, obj in events:
            self.send(kind, obj)
        return session

    def send(self, kind: str, obj: dict[str, Any]) -> None:
        """Deliver one event to the gateway, signed; a refusal is printed, as Stripe's
        dashboard would show it (Stripe would retry; `reconcile` repairs it here)."""
        event = {"id": f"evt_sim_{secrets.token_hex(12)}", "object": "event", "type": kind,
                 "created": int(time.time()), "livemode": False, "api_version": None,
                 "data": {"object": obj}, "pending_webhooks": 1,
                 "request": {"id": None, "idempotency_key": None}}
        body = json.dumps(event).encode()
        try:
            answer = requests.post(self.webhook_url, data=body, timeout=10, headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": _sign(body, self.webhook_secret)})
            if answer.status_code != 200:
                print(f"stripe-sim: {kind} answered {answer.status_code}: {answer.text[:200]}")
        except requests.RequestException as exc:
            print(f"stripe-sim: {kind} not delivered: {exc}")

    def app(self) -> Flask:
        """The HTTP side: Stripe's API paths and the pay page."""
        app = Flask("stripe_sim")

        @app.post("/v1/checkout/sessions")
        def create() -> Any:
            params = _nested(parse_qsl(request.get_data(as_text=True), keep_blank_values=True))
            session = self.create_session(params, request.headers.get("Idempotency-Key"))
            return public(session)

        @app.get("/v1/checkout/sessions")
        def list_sessions() -> Any:
            return _list("/v1/checkout/sessions",
                         [public(s) for s in self.sessions.values()])

        @app.get("/v1/checkout/sessions/<session_id>")
        def retrieve(session_id: str) -> Any:
            return public(self._session(session_id))

        @app.get("/v1/payment_intents")
        def list_intents() -> Any:
            return _list("/v1/payment_intents", list(self.intents.values()))

        @app.get("/v1/payment_intents/<intent_id>")
        def retrieve_intent(intent_id: str) -> Any:
            if intent_id not in self.intents:
                return _missing("payment_intent", intent_id)
            return self.intents[intent_id]

        @app.get("/pay/<session_id>")
        def page(session_id: str) -> Response:
            return Response(_page(self._session(session_id)), mimetype="text/html")

        @app.post("/pay/<session_id>/pay")
        def pay(session_id: str) -> Any:
            self._session(session_id)
            session = self.pay(session_id)
            return redirect(str(session["success_url"]).replace(
                "{CHECKOUT_SESSION_ID}", session_id), code=303)

        @app.post("/pay/<session_id>/cancel")
        def cancel(session_id: str) -> Any:
            return redirect(str(self._session(session_id)["cancel_url"]), code=303)

        return app

    def _session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            abort(404)
        return session


def public(session: dict[str, Any]) -> dict[str, Any]:
    """A session as Stripe shows it (without the simulator's own notes)."""
    return {k: v for k, v in session.items() if not k.startswith("_")}


def _missing(kind: str, object_id: str) -> tuple[dict[str, Any], int]:
    return {"error": {"type": "invalid_request_error", "code": "resource_missing",
                      "message": f"No such {kind}: '{object_id}'"}}, 404


def _page(session: dict[str, Any]) -> str:
    """The pay page: what is bought, for how much, and two buttons (no script)."""
    amount = money.format_display(
        money.from_minor_units(session["amount_total"], session["currency"]),
        session["currency"])
    state = ("" if session["status"] == "open"
             else f"<p id='state'>This session is {html.escape(session['status'])}.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stripe-sim: pay {html.escape(amount)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
.band{{background:#fde68a;color:#713f12;padding:.5rem;font-weight:700;text-align:center}}
button{{font-size:1.1rem;padding:.6rem 1.4rem;margin-right:.5rem}}</style></head>
<body><div class="band">TEST MODE: stripe-sim, no real payment</div>
<h1>{html.escape(session['_product'] or 'Payment')}</h1>
<p id="amount">{html.escape(amount)}</p>{state}
<form method="post" action="/pay/{html.escape(session['id'])}/pay" style="display:inline">
<button id="pay" type="submit">Pay</button></form>
<form method="post" action="/pay/{html.escape(session['id'])}/cancel" style="display:inline">
<button id="cancel" type="submit">Cancel</button></form></body></html>"""

