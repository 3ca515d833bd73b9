"""Stripe objects as API version 2026-10-28.endive renders them (the version the gateway
pins: STRIPE_API_VERSION), for stubbing Stripe's HTTP API and for webhook bodies.

The field sets follow Stripe's OpenAPI spec of the release (stripe/openapi,
latest/openapi.spec3.json, 2026-09-30.endive: within a release the monthly versions only
add) and the classes stripe-python 16.1 generated from it: a property that is required or
nullable is always present (null when it does not apply); one that is neither (a Checkout
Session's `line_items`, a Charge's `refunds`, a Refund's `failure_reason`) is present only
when asked for or when it applies. tests/topups/test_stripe_objects.py holds every field and
enum value here against the installed SDK. Reference pages: https://docs.stripe.com/api/
checkout/sessions/object, payment_intents/object, charges/object, refunds/object,
disputes/object, events/object. Only ids, amounts, statuses and metadata vary between
tests; every other field is as Stripe sends it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any

API_VERSION = "2026-10-28.endive"
CREATED = 1_764_000_000


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def ours(org: uuid.UUID) -> dict[str, str]:
    """The metadata the gateway puts on sessions and PaymentIntents."""
    return {"source": "billing-gateway", "org_id": str(org)}


def checkout_session(*, org: uuid.UUID | None, amount_total: int, currency: str = "usd",
                     payment_intent: str | None = None, payment_status: str = "paid",
                     status: str = "complete", session_id: str | None = None,
                     metadata: dict[str, str] | None = None,
                     expires_at: int | None = None) -> dict[str, Any]:
    """A Checkout Session in payment mode with one line item (hosted page), created now:
    it expires after Stripe's default 24 hours unless `expires_at` says otherwise (the
    gateway checks it against the clock)."""
    sid = session_id or f"cs_test_{secrets.token_hex(24)}"
    created = int(time.time())
    return {
        "id": sid,
        "object": "checkout.session",
        "adaptive_pricing": {"enabled": False},
        "after_expiration": None,
        "allow_promotion_codes": None,
        "allowed_payment_method_types": None,
        "amount_subtotal": amount_total,
        "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None,
                          "status": None},
        "billing_address_collection": None,
        "cancel_url": "http://localhost:8000/billing?canceled=true",
        "client_reference_id": f"billing-gateway:{org}" if org else None,
        "client_secret": None,
        "collected_information": {"shipping_details": None},
        "consent": None,
        "consent_collection": None,
        "created": created,
        "currency": currency,
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": None,
        "customer_account": None,
        "customer_creation": "if_required",
        "customer_details": {"address": {"city": None, "country": "US", "line1": None,
                                         "line2": None, "postal_code": "94103",
                                         "state": None},
                             "email": "customer@example.com", "name": "Jenny Rosen",
                             "phone": None, "tax_exempt": "none", "tax_ids": []},
        "customer_email": None,
        "discounts": [],
        "expires_at": created + 86400 if expires_at is None else expires_at,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": {"enabled": False, "invoice_data": {
            "account_tax_ids": None, "custom_fields": None, "description": None,
            "footer": None, "issuer": None, "metadata": {}, "rendering_options": None}},
        "livemode": False,
        "locale": None,
        "managed_payments": None,
        "metadata": metadata if metadata is not None else (ours(org) if org else {}),
        "mode": "payment",
        "optional_items": None,
        "origin_context": None,
        "payment_intent": payment_intent,
        "payment_link": None,
        "payment_method_collection": "if_required",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": payment_status,
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": status,
        "submit_type": None,
        "subscription": None,
        "success_url": ("http://localhost:8000/billing?success=true"
                        "&session_id={CHECKOUT_SESSION_ID}"),
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        # `hosted` until 2026-03-25.dahlia: https://docs.stripe.com/changelog/dahlia/
        # 2026-03-25/updates-available-checkout-session-ui-modes
        "ui_mode": "hosted_page",
        "url": f"https://checkout.stripe.com/c/pay/{sid}" if status == "open" else None,
        "wallet_options": None,
    }


def payment_intent(*, org: uuid.UUID | None, amount: int, currency: str = "usd",
                   status: str = "succeeded", intent_id: str | None = None,
                   metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """A PaymentIntent paid by card (amount_received = amount when succeeded)."""
    pid = intent_id or _id("pi")
    return {
        "id": pid,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": amount if status == "succeeded" else 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pid}_secret_{secrets.token_hex(12)}",
        "confirmation_method": "automatic",
        "created": CREATED,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "description": None,
        "last_payment_error": None,
        "latest_charge": _id("ch") if status == "succeeded" else None,
        "livemode": False,
        "metadata": metadata if metadata is not None else (ours(org) if org else {}),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": _id("pm"),
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"installments": None, "mandate_options": None,
                                            "network": None,
                                            "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": status,
        "transfer_data": None,
        "transfer_group": None,
    }


def charge(*, intent: str, amount: int, amount_refunded: int = 0, currency: str = "usd",
           metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The Charge of a PaymentIntent, refunded up to amount_refunded (cumulative)."""
    return {
        "id": _id("ch"),
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": _id("txn"),
        "billing_details": {"address": {"city": None, "country": None, "line1": None,
                                        "line2": None, "postal_code": None, "state": None},
                            "email": None, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": "BILLING GATEWAY",
        "captured": True,
        "created": CREATED,
        "currency": currency,
        "customer": None,
        "description": None,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": metadata or {},
        "on_behalf_of": None,
        "outcome": {"advice_code": None, "network_advice_code": None,
                    "network_decline_code": None, "network_status": "approved_by_network",
                    "reason": None, "risk_level": "normal", "risk_score": 32,
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": True,
        "payment_intent": intent,
        "payment_method": _id("pm"),
        "payment_method_details": {"card": {
            "amount_authorized": amount, "authorization_code": None, "brand": "visa",
            "checks": {"address_line1_check": None, "address_postal_code_check": None,
                       "cvc_check": "pass"},
            "country": "US", "exp_month": 8, "exp_year": 2027, "extended_authorization":
            {"status": "disabled"}, "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit",
            "incremental_authorization": {"status": "unavailable"}, "installments": None,
            "last4": "4242", "mandate": None, "multicapture": {"status": "unavailable"},
            "network": "visa", "network_token": {"used": False},
            "network_transaction_id": "104557651805572",
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": "unregulated", "three_d_secure": None, "wallet": None},
            "type": "card"},
        "radar_options": {},
        "receipt_email": None,
        "receipt_number": None,
        "receipt_url": "https://pay.stripe.com/receipts/payment/CAcaFwoVYWNjdF8x",
        "refunded": amount_refunded == amount,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "succeeded",
        "transfer_data": None,
        "transfer_group": None,
    }


def refund(*, intent: str, amount: int, status: str = "succeeded", currency: str = "usd",
           refund_id: str | None = None) -> dict[str, Any]:
    """A card Refund of a PaymentIntent's charge; failed ones say why (as Stripe's do)."""
    obj: dict[str, Any] = {
        "id": refund_id or _id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": _id("txn"),
        "charge": _id("ch"),
        "created": CREATED,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "destination_details": {"card": {"reference": "123456789012",
                                         "reference_status": "available",
                                         "reference_type": "acquirer_reference_number",
                                         "type": "refund"},
                                "type": "card"},
        "metadata": {},
        "payment_intent": intent,
        "payment_method": _id("pm"),
        "reason": "requested_by_customer",
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": status,
        "transfer_reversal": None,
    }
    if status == "failed":
        obj["failure_balance_transaction"] = _id("txn")
        obj["failure_reason"] = "expired_or_canceled_card"
    if status == "pending":
        obj["pending_reason"] = "processing"
    return obj


def dispute(*, intent: str, amount: int, status: str = "lost",
            currency: str = "usd") -> dict[str, Any]:
    """A closed dispute on a PaymentIntent's charge."""
    return {
        "id": _id("du"),
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [],
        "charge": _id("ch"),
        "created": CREATED,
        "currency": currency,
        "enhanced_eligibility_types": [],
        "evidence": {"access_activity_log": None, "billing_address": None,
                     "cancellation_policy": None, "cancellation_policy_disclosure": None,
                     "cancellation_rebuttal": None, "customer_communication": None,
                     "customer_email_address": None, "customer_name": None,
                     "customer_purchase_ip": None, "customer_signature": None,
                     "duplicate_charge_documentation": None,
                     "duplicate_charge_explanation": None, "duplicate_charge_id": None,
                     "enhanced_evidence": {}, "product_description": None, "receipt": None,
                     "refund_policy": None, "refund_policy_disclosure": None,
                     "refund_refusal_explanation": None, "service_date": None,
                     "service_documentation": None, "shipping_address": None,
                     "shipping_carrier": None, "shipping_date": None,
                     "shipping_documentation": None, "shipping_tracking_number": None,
                     "uncategorized_file": None, "uncategorized_text": None},
        "evidence_details": {"due_by": CREATED + 7 * 86400, "enhanced_eligibility": {},
                             "has_evidence": False, "past_due": False,
                             "submission_count": 0},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "network_reason_code": "4855",
        "payment_intent": intent,
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback",
                                            "network_reason_code": "4855"},
                                   "type": "card"},
        "reason": "product_not_received",
        "status": status,
    }


def event(kind: str, obj: dict[str, Any], *, event_id: str | None = None,
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """An Event envelope around an object, as a webhook delivers it; `previous` is what an
    `*.updated` event carries as data.previous_attributes (the only events that have it)."""
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": event_id or _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "context": None,
        "created": CREATED,
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


def sign(body: bytes, secret: str, *, timestamp: int | None = None,
         scheme: str = "v1") -> str:
    """A Stripe-Signature header value: t=...,v1=HMAC-SHA256(secret, "{t}.{body}")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},{scheme}={mac}"


def body(evt: dict[str, Any]) -> bytes:
    """An event serialized as Stripe sends it (pretty-printed JSON)."""
    return json.dumps(evt, indent=2).encode()


def payment_method(*, customer: str | None, method_id: str | None = None, brand: str = "visa",
                   last4: str = "4242", exp_month: int = 12, exp_year: int = 2030
                   ) -> dict[str, Any]:
    """A card PaymentMethod (https://docs.stripe.com/api/payment_methods/object)."""
    return {
        "id": method_id or _id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {"address": {"city": None, "country": None, "line1": None,
                                        "line2": None, "postal_code": None, "state": None},
                            "email": None, "name": None, "phone": None, "tax_id": None},
        "card": {"brand": brand, "checks": {"address_line1_check": None,
                                            "address_postal_code_check": None,
                                            "cvc_check": "pass"},
                 "country": "US", "display_brand": brand, "exp_month": exp_month,
                 "exp_year": exp_year, "fingerprint": "Xt5EWLLDS7FJjR1c", "funding": "credit",
                 "generated_from": None, "last4": last4,
                 "networks": {"available": [brand], "preferred": None},
                 "regulated_status": "unregulated",
                 "three_d_secure_usage": {"supported": True}, "wallet": None},
        "created": CREATED,
        "customer": customer,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


# Stripe's card errors for an off-session charge, as its API answers them (HTTP 402):
# https://docs.stripe.com/declines/codes, https://docs.stripe.com/error-codes
CARD_ERRORS = {
    "card_declined": ("insufficient_funds", "Your card has insufficient funds."),
    "authentication_required": ("authentication_required",
                                "Your card was declined. This transaction requires "
                                "authentication."),
    "expired_card": (None, "Your card has expired."),
}


def card_error(code: str, intent: dict[str, Any]) -> dict[str, Any]:
    """The 402 body of a declined off-session PaymentIntent: a card_error with code and
    decline_code, naming the PaymentIntent it left in requires_payment_method with its
    last_payment_error."""
    decline_code, message = CARD_ERRORS[code]
    error: dict[str, Any] = {
        "charge": _id("ch"),
        "code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
        "param": None,
        "request_log_url": "https://dashboard.stripe.com/test/logs/req_sim",
        "type": "card_error",
    }
    if decline_code is not None:
        error["decline_code"] = decline_code
    failed = {**intent, "status": "requires_payment_method", "amount_received": 0,
              "latest_charge": error["charge"], "last_payment_error": {
                  k: v for k, v in error.items() if k != "request_log_url"}}
    error["payment_intent"] = failed
    return {"error": error}
