"""stripe-sim: a local stand-in for the part of Stripe's API this service uses, so the whole
payment flow runs on a machine with no Stripe account. Never for production.

It answers what the gateway's normal code sends through STRIPE_API_BASE (nothing in the
gateway knows it is talking to a simulator): Checkout Sessions created, retrieved and listed;
PaymentIntents created (off-session, with a saved card), listed and retrieved; Customers and
their saved cards (PaymentMethods). Every POST honours its Idempotency-Key as Stripe's v1 API
does: the first answer is saved, whatever it was (a 402 or a 500 too), and replayed; the same
key with other parameters or on another path is a 400 `idempotency_error`, and while the
first request runs a 409 (https://docs.stripe.com/api/idempotent_requests).

A session's `url` is a page of its own with "Pay" and "Cancel"; "Pay" makes a succeeded
PaymentIntent paid with a test card (a PaymentMethod attached to the session's Customer when
the session saves it: `payment_intent_data[setup_future_usage]`) and sends
`checkout.session.completed` and `payment_intent.succeeded`, signed as Stripe signs
(t=..., v1=HMAC-SHA256 of "{t}.{body}"), to the gateway's webhook, then returns the customer
to the session's success URL. A PaymentIntent confirmed through the API sends
`payment_intent.succeeded`, or `payment_intent.payment_failed` when its card is declined,
just after its answer. Only the event types the gateway's endpoint subscribes to are sent.

`POST /sim/next-charge` scripts how the next API-confirmed charges end (declined, needing
authentication, expired card, a 500, or an answer slower than the client waits); see
`ChargeFailure`. Objects keep the fields of Stripe's own that the gateway reads
(https://docs.stripe.com/api/checkout/sessions/object, /api/payment_intents/object,
/api/payment_methods/object, /api/customers/object), in memory only.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import hmac
import html
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl

import requests
from flask import Flask, Response, abort, redirect, request

from billing_gateway.platform import money

Form = list[tuple[str, str]]


def _nested(form: Form) -> dict[str, Any]:
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


def _new_id(prefix: str) -> str:
    return f"{prefix}_sim_{secrets.token_hex(12)}"


def _true(value: Any) -> bool:
    """A form boolean as the SDK sends it ("true"/"false")."""
    return str(value).lower() == "true"


class ChargeFailure(StrEnum):
    """How `POST /sim/next-charge` makes the next API-confirmed charges end, as Stripe
    ends an off-session charge that fails (https://docs.stripe.com/error-codes,
    https://docs.stripe.com/declines/codes).

    The card errors are a 402 `card_error` whose `payment_intent` is back in
    `requires_payment_method` with `last_payment_error` set, and a
    `payment_intent.payment_failed` event. An off-session charge that the issuer wants
    authenticated fails like a decline, not in `requires_action`: with `off_session=true`
    Stripe cannot ask the customer, so the PaymentIntent wants a payment method again
    (https://docs.stripe.com/payments/save-during-payment, "Charge the saved payment method
    later"). SERVER_ERROR is a 500 `api_error` that charged nothing; TIMEOUT charges (and
    sends the event) at once but answers only after `delay` seconds, the case in which a
    client that gave up cannot know the card was charged.
    """

    CARD_DECLINED = "card_declined"
    AUTHENTICATION_REQUIRED = "authentication_required"
    EXPIRED_CARD = "expired_card"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class _CardError:
    code: str
    decline_code: str
    message: str
    param: str | None = None


_CARD_ERRORS = {
    ChargeFailure.CARD_DECLINED: _CardError(
        "card_declined", "generic_decline", "Your card was declined."),
    ChargeFailure.AUTHENTICATION_REQUIRED: _CardError(
        "authentication_required", "authentication_required",
        "Your card was declined. This transaction requires authentication."),
    ChargeFailure.EXPIRED_CARD: _CardError(
        "expired_card", "expired_card", "Your card has expired.", "exp_month"),
}


@dataclass
class ScriptedCharge:
    """One scripted end of a charge: `outcome`, `delay` seconds for TIMEOUT."""

    outcome: ChargeFailure
    delay: float

    def as_json(self) -> dict[str, Any]:
        return {"outcome": str(self.outcome), "delay": self.delay}


@dataclass
class _Answer:
    """What an API request answered: kept under its Idempotency-Key and replayed as is."""

    body: dict[str, Any]
    status: int = 200
    request_id: str = field(default_factory=lambda: _new_id("req"))
    # Events to send once the answer has gone out (never on a replay).
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Refused before anything ran (validation): Stripe saves no result for it.
    saved: bool = True

    def __post_init__(self) -> None:
        # What was answered then, not what the objects become: a replay is the same bytes.
        self.body = copy.deepcopy(self.body)
        self.events = copy.deepcopy(self.events)


@dataclass
class _Claim:
    """An Idempotency-Key: which request it was first used for, and its answer once known."""

    path: str
    form: Form
    answer: _Answer | None = None


def _error(status: int, kind: str, message: str,
           events: list[tuple[str, dict[str, Any]]] | None = None, **details: Any) -> _Answer:
    """Stripe's error shape (https://docs.stripe.com/api/errors), for a request that ran:
    its answer is saved under its Idempotency-Key like a success."""
    return _Answer({"error": {"type": kind, "message": message, **details}}, status,
                   events=events or [])


def _invalid(message: str, param: str | None = None, code: str | None = None) -> _Answer:
    details = {k: v for k, v in (("param", param), ("code", code)) if v is not None}
    return _Answer({"error": {"type": "invalid_request_error", "message": message,
                              **details}}, 400, saved=False)


def _missing(kind: str, object_id: str, param: str | None = None) -> _Answer:
    """The object of the path (404) or one named by a parameter (400) does not exist."""
    answer = _invalid(f"No such {kind}: '{object_id}'", param, "resource_missing")
    answer.status = 404 if param is None else 400
    return answer


@dataclass
class StripeSim:
    """The simulator's state and its Flask app."""

    public_url: str
    webhook_url: str
    webhook_secret: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Idempotency-Key -> the request that first used it (and its answer).
    claims: dict[str, _Claim] = field(default_factory=dict)
    # How the next API-confirmed charges end, first first; empty: they succeed.
    next_charges: collections.deque[ScriptedCharge] = field(default_factory=collections.deque)
    # How long a TIMEOUT answer is held when the script names no delay: longer than the
    # gateway's STRIPE_TIMEOUT (5 s by default) with room to spare.
    timeout_delay: float = 30.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script_charges(self, outcome: ChargeFailure | str, times: int = 1,
                       delay: float | None = None) -> list[ScriptedCharge]:
        """Make the next `times` API-confirmed charges end with `outcome`; return the script."""
        scripted = ScriptedCharge(ChargeFailure(outcome),
                                  self.timeout_delay if delay is None else delay)
        with self.lock:
            self.next_charges.extend([scripted] * times)
            return list(self.next_charges)

    def create_session(self, params: dict[str, Any]) -> _Answer:
        """Create a Checkout Session in payment mode."""
        customer = params.get("customer")
        intent_data = params.get("payment_intent_data", {})
        with self.lock:
            if customer is not None and customer not in self.customers:
                return _missing("customer", customer, "customer")
            item = params["line_items"][0]
            price = item["price_data"]
            amount = int(price["unit_amount"]) * int(item.get("quantity", "1"))
            session_id = f"cs_test_sim_{secrets.token_hex(12)}"
            now = int(time.time())
            session = {
                "id": session_id, "object": "checkout.session", "mode": params.get("mode"),
                "amount_subtotal": amount, "amount_total": amount,
                "currency": price["currency"], "status": "open",
                "payment_status": "unpaid", "payment_intent": None, "customer": customer,
                "client_reference_id": params.get("client_reference_id"),
                "metadata": params.get("metadata", {}),
                "success_url": params.get("success_url"),
                "cancel_url": params.get("cancel_url"),
                "created": now, "livemode": False,
                "expires_at": int(params.get("expires_at", now + 24 * 3600)),
                "url": f"{self.public_url}/pay/{session_id}",
                # Kept for "Pay": what the PaymentIntent will carry.
                "_intent_metadata": intent_data.get("metadata", {}),
                "_setup_future_usage": intent_data.get("setup_future_usage"),
                "_customer_email": params.get("customer_email"),
                "_product": price.get("product_data", {}).get("name", ""),
            }
            self.sessions[session_id] = session
            return _Answer(public(session))

    def pay(self, session_id: str) -> dict[str, Any]:
        """Pay an open session by card, then send Stripe's two events.

        A session that saves the card (setup_future_usage) attaches it to its Customer,
        making one first if the session named none, as Checkout does.
        https://docs.stripe.com/payments/checkout/save-during-payment
        """
        with self.lock:
            session = self.sessions[session_id]
            if session["status"] == "open":
                saving = session["_setup_future_usage"] is not None
                if saving and session["customer"] is None:
                    session["customer"] = self._new_customer(
                        {"email": session["_customer_email"]})["id"]
                card = self._new_card(session["customer"] if saving else None)
                intent = self._new_intent(
                    amount=session["amount_total"], currency=session["currency"],
                    metadata=session["_intent_metadata"], customer=session["customer"],
                    setup_future_usage=session["_setup_future_usage"])
                self._succeed(intent, card)
                session.update(status="complete", payment_status="paid",
                               payment_intent=intent["id"])
                events = [("checkout.session.completed", public(session)),
                          ("payment_intent.succeeded", intent)]
            else:
                events = []
        for kind, obj in events:
            self.send(kind, obj)
        return session

    def create_customer(self, params: dict[str, Any]) -> _Answer:
        """Create a Customer."""
        with self.lock:
            return _Answer(self._new_customer(params))

    def update_customer(self, customer_id: str, params: dict[str, Any]) -> _Answer:
        """Update a Customer: metadata merged (an empty value unsets its key, an empty
        `metadata` all of them), email, name, description, the invoices' default payment
        method. https://docs.stripe.com/api/customers/update"""
        with self.lock:
            customer = self.customers.get(customer_id)
            if customer is None:
                return _missing("customer", customer_id)
            default = params.get("invoice_settings", {}).get("default_payment_method")
            if default and default not in self.payment_methods:
                return _missing("PaymentMethod", default,
                                "invoice_settings[default_payment_method]")
            metadata = params.get("metadata", {})
            if metadata == "":
                customer["metadata"] = {}
            for key, value in dict(metadata).items():
                if value == "":
                    customer["metadata"].pop(key, None)
                else:
                    customer["metadata"][key] = value
            for name in ("email", "name", "description"):
                if name in params:
                    customer[name] = params[name] or None
            if default is not None:
                customer["invoice_settings"]["default_payment_method"] = default or None
            return _Answer(customer)

    def detach(self, method_id: str) -> _Answer:
        """Detach a PaymentMethod from its Customer; it can never be charged again."""
        with self.lock:
            method = self.payment_methods.get(method_id)
            if method is None:
                return _missing("payment_method", method_id)
            if method["customer"] is None:
                return _invalid("The payment method you provided is not attached to a "
                                "customer so detachment is impossible.")
            owner = self.customers[method["customer"]]
            if owner["invoice_settings"]["default_payment_method"] == method_id:
                owner["invoice_settings"]["default_payment_method"] = None
            method["customer"] = None
            return _Answer(public(method))

    def create_intent(self, params: dict[str, Any], key: str | None) -> _Answer:
        """Create a PaymentIntent; with confirm=true, charge its card at once.

        https://docs.stripe.com/api/payment_intents/create. The next scripted charge, if
        any, decides how the charge ends (ChargeFailure); otherwise it succeeds.
        """
        confirm = _true(params.get("confirm"))
        with self.lock:
            refused = self._refuse_intent(params)
            if refused is not None:
                return refused
            scripted = self.next_charges.popleft() if confirm and self.next_charges else None
            if scripted is not None and scripted.outcome is ChargeFailure.SERVER_ERROR:
                return _error(500, "api_error", "An unknown error occurred")
            intent = self._new_intent(
                amount=int(params["amount"]), currency=params["currency"].lower(),
                metadata=params.get("metadata", {}), customer=params.get("customer"),
                setup_future_usage=params.get("setup_future_usage"),
                description=params.get("description"))
            method = self.payment_methods.get(params.get("payment_method", ""))
            if not confirm:
                intent.update(status="requires_payment_method" if method is None
                              else "requires_confirmation",
                              payment_method=method and method["id"])
                return _Answer(intent)
            assert method is not None  # _refuse_intent: confirm needs a payment method
            card_error = _CARD_ERRORS.get(scripted.outcome) if scripted else None
            if card_error is None:
                self._succeed(intent, method)
                answer = _Answer(intent, events=[("payment_intent.succeeded", intent)])
            else:
                error = self._decline(intent, method, card_error)
                answer = _error(402, "card_error", card_error.message,
                                [("payment_intent.payment_failed", intent)], **error)
        if scripted is not None and scripted.outcome is ChargeFailure.TIMEOUT:
            # The charge is made and announced; only the answer is late.
            for kind, obj in answer.events:
                self.send(kind, obj, answer.request_id, key)
            answer.events = []
            time.sleep(scripted.delay)
        return answer

    def _refuse_intent(self, params: dict[str, Any]) -> _Answer | None:
        """Stripe's 400s for a PaymentIntent it would not create (nothing is saved).
        Called with the lock held."""
        for name in ("amount", "currency"):
            if not params.get(name):
                return _invalid(f"Missing required param: {name}.", name, "parameter_missing")
        if not str(params["amount"]).isdigit() or int(params["amount"]) < 1:
            return _invalid(f"Invalid integer: {params['amount']}", "amount",
                            "parameter_invalid_integer")
        confirm = _true(params.get("confirm"))
        if "off_session" in params and not confirm:
            return _invalid("off_session can only be used with confirm=true.", "off_session")
        customer = params.get("customer")
        if customer is not None and customer not in self.customers:
            return _missing("customer", customer, "customer")
        method_id = params.get("payment_method")
        if method_id is None:
            if confirm:
                return _invalid("A payment method is required to confirm this "
                                "PaymentIntent.", "payment_method", "parameter_missing")
            return None
        method = self.payment_methods.get(method_id)
        if method is None:
            return _missing("payment_method", method_id, "payment_method")
        if method["customer"] is None:
            return _invalid(
                "The provided PaymentMethod was previously used with a PaymentIntent "
                "without Customer attachment, shared with a connected account without "
                "Customer attachment, or was detached from a Customer. It may not be "
                "used again. To use a PaymentMethod multiple times, you must attach it "
                "to a Customer first.", "payment_method")
        if method["customer"] != customer:
            return _invalid(f"The provided PaymentMethod belongs to the Customer "
                            f"'{method['customer']}'; pass that Customer as `customer`.",
                            "payment_method")
        return None

    def _new_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        customer = {
            "id": _new_id("cus"), "object": "customer", "address": None, "balance": 0,
            "created": int(time.time()), "currency": None, "default_source": None,
            "delinquent": False, "description": params.get("description"), "discount": None,
            "email": params.get("email"), "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {"custom_fields": None, "default_payment_method": None,
                                 "footer": None, "rendering_options": None},
            "livemode": False, "metadata": params.get("metadata", {}),
            "name": params.get("name"), "next_invoice_sequence": 1, "phone": None,
            "preferred_locales": [], "shipping": None, "tax_exempt": "none",
            "test_clock": None,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _new_card(self, customer: str | None) -> dict[str, Any]:
        """The test card 4242 4242 4242 4242 as a PaymentMethod (attached to `customer`)."""
        method_id = _new_id("pm")
        method: dict[str, Any] = {
            "id": method_id, "object": "payment_method", "allow_redisplay": "unspecified",
            "billing_details": {"address": {"city": None, "country": None, "line1": None,
                                            "line2": None, "postal_code": None,
                                            "state": None},
                                "email": None, "name": None, "phone": None, "tax_id": None},
            "card": {"brand": "visa", "checks": {"address_line1_check": None,
                                                 "address_postal_code_check": None,
                                                 "cvc_check": "pass"},
                     "country": "US", "display_brand": "visa", "exp_month": 12,
                     "exp_year": time.gmtime().tm_year + 3,
                     "fingerprint": "SimVisa4242Print", "funding": "credit",
                     "generated_from": None, "last4": "4242",
                     "networks": {"available": ["visa"], "preferred": None},
                     "regulated_status": "unregulated",
                     "three_d_secure_usage": {"supported": True}, "wallet": None},
            "created": int(time.time()), "customer": customer, "livemode": False,
            "metadata": {}, "type": "card",
        }
        self.payment_methods[method_id] = method
        return method

    def _new_intent(self, *, amount: int, currency: str, metadata: dict[str, str],
                    customer: str | None, setup_future_usage: str | None,
                    description: str | None = None) -> dict[str, Any]:
        intent_id = _new_id("pi")
        intent = {
            "id": intent_id, "object": "payment_intent", "amount": amount,
            "amount_capturable": 0, "amount_received": 0, "canceled_at": None,
            "cancellation_reason": None, "capture_method": "automatic_async",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "confirmation_method": "automatic", "created": int(time.time()),
            "currency": currency, "customer": customer, "description": description,
            "last_payment_error": None, "latest_charge": None, "livemode": False,
            "metadata": metadata, "next_action": None, "payment_method": None,
            "payment_method_types": ["card"], "setup_future_usage": setup_future_usage,
            "status": "requires_payment_method",
        }
        self.intents[intent_id] = intent
        return intent

    @staticmethod
    def _succeed(intent: dict[str, Any], method: dict[str, Any]) -> None:
        intent.update(status="succeeded", amount_received=intent["amount"],
                      payment_method=method["id"], latest_charge=_new_id("ch"))

    @staticmethod
    def _decline(intent: dict[str, Any], method: dict[str, Any],
                 card_error: _CardError) -> dict[str, Any]:
        """Fail the charge; return the error's details (Stripe's `error` object)."""
        charge = _new_id("ch")
        error = {"charge": charge, "code": card_error.code,
                 "decline_code": card_error.decline_code,
                 "doc_url": ("https://docs.stripe.com/error-codes/"
                             + card_error.code.replace("_", "-")),
                 "message": card_error.message, "payment_method": public(method),
                 "type": "card_error"}
        if card_error.param is not None:
            error["param"] = card_error.param
        # A failed confirmation leaves no payment method on the PaymentIntent: it is in
        # last_payment_error, and a new one is needed.
        intent.update(status="requires_payment_method", payment_method=None,
                      latest_charge=charge, last_payment_error=error)
        return {k: v for k, v in error.items() if k not in ("message", "type")} | {
            "payment_intent": intent}

    def send(self, kind: str, obj: dict[str, Any], request_id: str | None = None,
             idempotency_key: str | None = None) -> None:
        """Deliver one event to the gateway, signed; a refusal is printed, as Stripe's
        dashboard would show it (Stripe would retry; `reconcile` repairs it here)."""
        event = {"id": f"evt_sim_{secrets.token_hex(12)}", "object": "event", "type": kind,
                 "created": int(time.time()), "livemode": False, "api_version": None,
                 "data": {"object": obj}, "pending_webhooks": 1,
                 "request": {"id": request_id, "idempotency_key": idempotency_key}}
        body = json.dumps(event).encode()
        try:
            answer = requests.post(self.webhook_url, data=body, timeout=10, headers={
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": _sign(body, self.webhook_secret)})
            if answer.status_code != 200:
                print(f"stripe-sim: {kind} answered {answer.status_code}: {answer.text[:200]}")
        except requests.RequestException as exc:
            print(f"stripe-sim: {kind} not delivered: {exc}")

    def idempotent(self, run: Callable[[dict[str, Any]], _Answer]) -> Response:
        """Answer one API POST under its Idempotency-Key, as Stripe's v1 API does."""
        raw = parse_qsl(request.get_data(as_text=True), keep_blank_values=True)
        form, key = sorted(raw), request.headers.get("Idempotency-Key")
        if key:
            with self.lock:
                claim = self.claims.get(key)
                if claim is None:  # ours: a concurrent retry now gets 409
                    self.claims[key] = _Claim(request.path, form)
            if claim is not None:
                return self._replay(key, claim, form)
        try:
            answer = run(_nested(raw))
        except BaseException:
            if key:
                with self.lock:
                    del self.claims[key]
            raise
        if key:
            with self.lock:
                if answer.saved:
                    self.claims[key].answer = answer
                else:  # refused before it ran: Stripe saves nothing, a retry runs again
                    del self.claims[key]
        response = _respond(answer)
        for kind, obj in answer.events:
            # After the answer has gone out, as Stripe's events follow its answers.
            response.call_on_close(functools.partial(
                self.send, kind, obj, answer.request_id, key))
        return response

    def _replay(self, key: str, claim: _Claim, form: Form) -> Response:
        if claim.path != request.path:
            return _respond(_Answer({"error": {"type": "idempotency_error", "message": (
                f"Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ('{claim.path}' vs '{request.path}'). Try using a key "
                f"other than '{key}' if you meant to execute a different request.")}}, 400))
        if claim.form != form:
            return _respond(_Answer({"error": {"type": "idempotency_error", "message": (
                f"Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you "
                f"meant to execute a different request.")}}, 400))
        if claim.answer is None:
            return _respond(_Answer({"error": {
                "type": "invalid_request_error", "code": "idempotency_key_in_use",
                "message": ("There is currently another in-progress request using this "
                            "Idempotent Key (that probably means you submitted twice, and "
                            f"the other request is still going through): {key}. Please try "
                            "again later.")}}, 409))
        response = _respond(claim.answer)
        response.headers["Idempotent-Replayed"] = "true"
        response.headers["Original-Request"] = claim.answer.request_id
        response.headers["Request-Id"] = _new_id("req")
        return response

    def app(self) -> Flask:
        """The HTTP side: Stripe's API paths, the pay page, and the charge script."""
        app = Flask("stripe_sim")

        @app.post("/v1/checkout/sessions")
        def create() -> Any:
            return self.idempotent(self.create_session)

        @app.get("/v1/checkout/sessions")
        def list_sessions() -> Any:
            return _list("/v1/checkout/sessions",
                         [public(s) for s in self.sessions.values()])

        @app.get("/v1/checkout/sessions/<session_id>")
        def retrieve(session_id: str) -> Any:
            return public(self._session(session_id))

        @app.post("/v1/payment_intents")
        def create_intent() -> Any:
            key = request.headers.get("Idempotency-Key")
            return self.idempotent(lambda params: self.create_intent(params, key))

        @app.get("/v1/payment_intents")
        def list_intents() -> Any:
            return _list("/v1/payment_intents", list(self.intents.values()))

        @app.get("/v1/payment_intents/<intent_id>")
        def retrieve_intent(intent_id: str) -> Any:
            return self._get(self.intents, "payment_intent", intent_id)

        @app.post("/v1/customers")
        def create_customer() -> Any:
            return self.idempotent(self.create_customer)

        @app.get("/v1/customers/<customer_id>")
        def retrieve_customer(customer_id: str) -> Any:
            return self._get(self.customers, "customer", customer_id)

        @app.post("/v1/customers/<customer_id>")
        def update_customer(customer_id: str) -> Any:
            return self.idempotent(lambda params: self.update_customer(customer_id, params))

        @app.get("/v1/customers/<customer_id>/payment_methods")
        def customer_methods(customer_id: str) -> Any:
            if customer_id not in self.customers:
                return _respond(_missing("customer", customer_id))
            return self._methods(customer_id, f"/v1/customers/{customer_id}/payment_methods")

        @app.get("/v1/customers/<customer_id>/payment_methods/<method_id>")
        def customer_method(customer_id: str, method_id: str) -> Any:
            method = self.payment_methods.get(method_id)
            if method is None or method["customer"] != customer_id:
                return _respond(_missing("payment_method", method_id))
            return public(method)

        @app.get("/v1/payment_methods")
        def list_methods() -> Any:
            customer = request.args.get("customer")
            if customer is None:
                return _respond(_invalid("Missing required param: customer.", "customer",
                                         "parameter_missing"))
            return self._methods(customer, "/v1/payment_methods")

        @app.get("/v1/payment_methods/<method_id>")
        def retrieve_method(method_id: str) -> Any:
            return self._get(self.payment_methods, "payment_method", method_id)

        @app.post("/v1/payment_methods/<method_id>/detach")
        def detach(method_id: str) -> Any:
            return self.idempotent(lambda params: self.detach(method_id))

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

        @app.get("/sim/next-charge")
        def scripted() -> Any:
            with self.lock:
                return {"next": [s.as_json() for s in self.next_charges]}

        @app.post("/sim/next-charge")
        def script() -> Any:
            return self._script(request.get_json(silent=True))

        @app.delete("/sim/next-charge")
        def unscript() -> Any:
            with self.lock:
                self.next_charges.clear()
            return {"next": []}

        @app.after_request
        def request_id(response: Response) -> Response:
            if request.path.startswith("/v1/"):
                response.headers.setdefault("Request-Id", _new_id("req"))
            return response

        return app

    def _script(self, body: Any) -> tuple[dict[str, Any], int]:
        """POST /sim/next-charge {"outcome", "times"?: 1, "delay"?: seconds (timeout)}."""
        if not isinstance(body, dict) or body.get("outcome") not in set(ChargeFailure):
            return {"error": "send JSON {\"outcome\": one of "
                             f"{', '.join(ChargeFailure)}, \"times\": 1, \"delay\": "
                             "seconds (timeout only)}"}, 400
        times, delay = body.get("times", 1), body.get("delay")
        if type(times) is not int or times < 1:
            return {"error": "times: a whole number of charges, at least 1"}, 400
        if delay is not None and (type(delay) not in (int, float) or not 0 <= delay <= 600):
            return {"error": "delay: seconds, from 0 to 600"}, 400
        script = self.script_charges(body["outcome"], times, delay)
        return {"next": [s.as_json() for s in script]}, 201

    def _get(self, objects: dict[str, dict[str, Any]], kind: str, object_id: str) -> Any:
        found = objects.get(object_id)
        return _respond(_missing(kind, object_id)) if found is None else public(found)

    def _methods(self, customer: str, url: str) -> dict[str, Any]:
        kind = request.args.get("type")
        return _list(url, [public(m) for m in self.payment_methods.values()
                           if m["customer"] == customer and kind in (None, m["type"])])

    def _session(self, session_id: str) -> dict[str, Any]:
        session = self.sessions.get(session_id)
        if session is None:
            abort(404)
        return session


def _respond(answer: _Answer) -> Response:
    response = Response(json.dumps(answer.body), status=answer.status,
                        mimetype="application/json")
    response.headers["Request-Id"] = answer.request_id
    if answer.status >= 500:
        # Stripe's answer to a 500 under an Idempotency-Key: a retry replays it.
        response.headers["Stripe-Should-Retry"] = "false"
    return response


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """An object as Stripe shows it (without the simulator's own notes)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _page(session: dict[str, Any]) -> str:
    """The pay page: what is bought, for how much, and two buttons (no script)."""
    amount = money.format_display(
        money.from_minor_units(session["amount_total"], session["currency"]),
        session["currency"])
    state = ("" if session["status"] == "open"
             else f"<p id='state'>This session is {html.escape(session['status'])}.</p>")
    saving = ("" if session["_setup_future_usage"] is None else
              "<p id='saving'>Pays with the test card Visa •••• 4242 and saves it "
              "for later top-ups.</p>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stripe-sim: pay {html.escape(amount)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}
.band{{background:#fde68a;color:#713f12;padding:.5rem;font-weight:700;text-align:center}}
button{{font-size:1.1rem;padding:.6rem 1.4rem;margin-right:.5rem}}</style></head>
<body><div class="band">TEST MODE: stripe-sim, no real payment</div>
<h1>{html.escape(session['_product'] or 'Payment')}</h1>
<p id="amount">{html.escape(amount)}</p>{saving}{state}
<form method="post" action="/pay/{html.escape(session['id'])}/pay" style="display:inline">
<button id="pay" type="submit">Pay</button></form>
<form method="post" action="/pay/{html.escape(session['id'])}/cancel" style="display:inline">
<button id="cancel" type="submit">Cancel</button></form></body></html>"""
