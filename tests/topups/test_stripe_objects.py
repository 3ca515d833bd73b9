"""The test objects are Stripe's objects of the pinned API version: every field and enum
value they carry is one the installed SDK (generated from that version's spec) knows, and
every event the gateway handles is an event type of that version."""

from __future__ import annotations

import typing
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import stripe

from billing_gateway.topups.webhook_events import HANDLED_EVENTS
from tests import stripe_objects as so

ORG = uuid.uuid4()

OBJECTS: dict[str, tuple[type, Callable[[], dict[str, Any]]]] = {
    "open checkout session": (stripe.checkout.Session, lambda: so.checkout_session(
        org=ORG, amount_total=1000, status="open", payment_status="unpaid")),
    "paid checkout session": (stripe.checkout.Session, lambda: so.checkout_session(
        org=ORG, amount_total=1000, payment_intent="pi_1")),
    "payment intent": (stripe.PaymentIntent, lambda: so.payment_intent(org=ORG, amount=1000)),
    "charge": (stripe.Charge, lambda: so.charge(intent="pi_1", amount=1000,
                                                amount_refunded=400)),
    "refund": (stripe.Refund, lambda: so.refund(intent="pi_1", amount=400)),
    "failed refund": (stripe.Refund, lambda: so.refund(intent="pi_1", amount=400,
                                                       status="failed")),
    "pending refund": (stripe.Refund, lambda: so.refund(intent="pi_1", amount=400,
                                                        status="pending")),
    "dispute": (stripe.Dispute, lambda: so.dispute(intent="pi_1", amount=1000)),
    "event": (stripe.Event, lambda: so.event("refund.updated", so.refund(
        intent="pi_1", amount=400, status="failed"), previous={"status": "succeeded"})),
}


def _fields(cls: type) -> dict[str, Any]:
    """The fields the SDK declares for a resource (its annotations, ClassVars aside)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        for name, annotation in getattr(klass, "__annotations__", {}).items():
            if not name.startswith("_") and typing.get_origin(annotation) is not typing.ClassVar:
                found[name] = annotation
    return found


def _literals(annotation: Any) -> set[Any]:
    """The values a Literal in the annotation allows (empty when it has none)."""
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    return set().union(*(_literals(arg) for arg in typing.get_args(annotation)))


@pytest.mark.parametrize("name", OBJECTS)
def test_every_field_is_one_of_the_pinned_versions(name: str) -> None:
    cls, make = OBJECTS[name]
    assert set(make()) - set(_fields(cls)) == set()


@pytest.mark.parametrize("name", OBJECTS)
def test_every_enum_value_is_one_of_the_pinned_versions(name: str) -> None:
    """ui_mode `hosted` (before 2026-03-25.dahlia) would fail here: `hosted_page` now."""
    cls, make = OBJECTS[name]
    fields = _fields(cls)
    wrong = {field: value for field, value in make().items()
             if isinstance(value, str) and _literals(fields[field])
             and value not in _literals(fields[field])}
    assert wrong == {}


def test_every_handled_event_is_an_event_type_of_the_pinned_version() -> None:
    assert set(HANDLED_EVENTS) - _literals(_fields(stripe.Event)["type"]) == set()
