"""The customer billing page (/billing): server-rendered HTML for a member's browser,
signed in by a one-time portal link, never by a bearer token."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from typing import Any

from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    g,
    get_flashed_messages,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFProtect
from werkzeug.exceptions import HTTPException, Unauthorized

from billing_gateway.autotopup import cards
from billing_gateway.autotopup import settings as auto_top_up_settings
from billing_gateway.ledger import credits, export, history
from billing_gateway.notifications import alerts
from billing_gateway.platform import money
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import get_db, tenant_transaction
from billing_gateway.platform.errors import BillingError, ValidationFailed
from billing_gateway.portal import auto_top_up, filters, links, security, sessions, spend_chart
from billing_gateway.topups import checkout, start
from billing_gateway.usage import summary

log = logging.getLogger("billing_gateway")

pages = Blueprint("billing_page", __name__, url_prefix="/billing",
                  template_folder="templates", static_folder="static",
                  static_url_path="/static")
csrf = CSRFProtect()

PAGE_SIZE = 20
QUICK_AMOUNTS = tuple(Decimal(n) for n in (10, 25, 50, 100, 250))
CHART_DAYS = 30
# The Flask session (a signed cookie scoped to /billing) holds only this token; who it
# belongs to, and whether it still works, is in portal_sessions.
SESSION_TOKEN = "portal_session"  # noqa: S105  # a key of the session, not a secret
_OPEN_ENDPOINTS = ("billing_page.open_link", "billing_page.static")
# The flashed messages of the auto top-up section (shown once, after its forms redirect).
AUTO_TOP_UP_MESSAGE = "auto-top-up"


def _settings() -> Settings:
    settings: Settings = current_app.config["BILLING_SETTINGS"]
    return settings


@pages.before_request
def _sign_in() -> None:
    """Find the member of this browser session (cookie only), then check the CSRF token."""
    if request.endpoint in _OPEN_ENDPOINTS:
        return
    token = session.get(SESSION_TOKEN)
    member = None
    if isinstance(token, str):
        idle = dt.timedelta(seconds=_settings().portal_idle_timeout)
        member = sessions.find_member(get_db(), token, idle=idle)
    if member is None:
        session.clear()
        raise Unauthorized("Your billing session has ended.")
    g.member = member
    g.portal_token = token
    if request.method == "POST":
        csrf.protect()


@pages.context_processor
def _page_context() -> dict[str, object]:
    # Stripe's test keys (and stripe-sim under `serve`) move no money: say so on every page.
    return {"test_mode": (_settings().stripe_secret_key or "").startswith("sk_test_")}


@pages.after_request
def _headers(response: Response) -> Response:
    return security.add_headers(response, _settings())


def _member() -> sessions.Member:
    member: sessions.Member = g.member
    return member


@pages.route("/portal/<token>", methods=["GET"])
def open_link(token: str) -> ResponseReturnValue:
    """Open a portal link: start this browser's session and go to the page (once)."""
    try:
        session_token, _ = sessions.open_session(get_db(), token)
    except links.LinkRefused as refused:
        status = 404 if refused.reason is links.LinkRefusal.UNKNOWN else 410
        return render_template("link_refused.html", reason=refused.reason.value), status
    session.clear()  # a new member, a new CSRF secret
    session[SESSION_TOKEN] = session_token
    return redirect(url_for(".billing"), 303)


@pages.route("", methods=["GET"])
def billing() -> ResponseReturnValue:
    """Show the balance, add funds, the return banner, spend per day and the history."""
    return _render_page()


def _page_number() -> int:
    raw = request.args.get("page", "1")
    try:
        number = money.parse_whole_number(raw)
    except money.AmountError:
        return 1
    return max(1, min(number, 10**9))


def _type_filter() -> str | None:
    chosen = request.args.get("type") or None
    return chosen if chosen in credits.TRANSACTION_TYPES else None


def _payment_banner(conn: Any, org: uuid.UUID) -> dict[str, Any] | None:
    if request.args.get("canceled") == "true":
        return {"state": "canceled"}
    session_id = request.args.get("session_id")
    if request.args.get("success") != "true" or not session_id or len(session_id) > 255:
        return None
    result = checkout.outcome(conn, org, session_id)
    return {"state": result.state.value, "amount": result.amount, "session_id": session_id}


def _render_page(*, form_error: str | None = None, entered: str = "", save_card: bool = False,
                 auto_form: auto_top_up.SettingsForm | None = None,
                 remove_error: str | None = None, resume_error: str | None = None,
                 status: int = 200) -> ResponseReturnValue:
    settings = _settings()
    member = _member()
    page_number, kind = _page_number(), _type_filter()
    balance, _ = credits.get_account(get_db(), member.org_id, member.member)
    today = dt.datetime.now(dt.UTC).date()
    with tenant_transaction(get_db(), member.org_id, member.member) as conn:
        page = history.history(conn, member.org_id, limit=PAGE_SIZE,
                               offset=(page_number - 1) * PAGE_SIZE, type=kind)
        banner = _payment_banner(conn, member.org_id)
        usage = summary.usage_summary(conn, member.org_id, start=today - dt.timedelta(
            days=CHART_DAYS - 1), end=today, group_by="day")
        threshold = alerts.alert_settings(
            conn, member.org_id, default_threshold=settings.low_balance_default
        ).low_balance_threshold
        auto_state = auto_top_up_settings.read(conn, member.org_id)
    pages_total = max(1, -(-page.total // PAGE_SIZE))
    body = render_template(
        "billing.html",
        settings=settings,
        member=member,
        balance=balance,
        low_balance=balance < threshold,
        threshold=threshold,
        quick_amounts=QUICK_AMOUNTS,
        attempt=uuid.uuid4().hex,
        form_error=form_error,
        entered=entered,
        save_card=save_card,
        auto=auto_top_up.section(auto_state, settings, balance, today, form=auto_form),
        auto_messages=get_flashed_messages(category_filter=[AUTO_TOP_UP_MESSAGE]),
        remove_error=remove_error,
        resume_error=resume_error,
        banner=banner,
        chart=spend_chart.draw(usage["items"], usage["total"]),
        transactions=page.transactions,
        total=page.total,
        page_number=page_number,
        pages_total=pages_total,
        has_next=page_number * PAGE_SIZE < page.total,
        kind=kind,
        types=credits.TRANSACTION_TYPES,
    )
    return body, status


def _requested_amount() -> tuple[str, Decimal]:
    """The quick amount pressed, else the custom amount typed ("25", "25.00", "$1,000")."""
    raw = (request.form.get("quick") or request.form.get("amount") or "").strip()
    currency = _settings().currency
    if not raw.removeprefix(money.currency_symbol(currency)).strip():
        raise ValidationFailed("Enter an amount, or choose one of the amounts above.")
    try:
        # The page writes amounts grouped ("$10,000.00"), so a customer may type them so.
        return raw, filters.read_amount(raw, currency)
    except money.AmountError as exc:
        raise ValidationFailed(f"“{raw[:40]}” is not an amount, such as 25 or 25.00.") from exc


@pages.route("/add-funds", methods=["POST"])
def add_funds() -> ResponseReturnValue:
    """Create a Checkout Session as POST /create-checkout does, then 303 to Stripe's page."""
    settings = _settings()
    entered = ""
    # A checkbox is sent only when ticked; anything but the form's own value is "not ticked".
    save_card = request.form.get("save_card") == "yes"
    try:
        entered, amount = _requested_amount()
        try:
            start.check_amount(settings, amount)
        except ValidationFailed as exc:
            raise ValidationFailed(_amount_problem(settings, amount)) from exc
        return _checkout(amount, save_card=save_card, form="page")
    except ValidationFailed as exc:
        return _render_page(form_error=exc.message, entered=entered, save_card=save_card,
                            status=400)
    except BillingError as exc:  # Stripe down or slow, not configured, too busy
        return _render_page(form_error=_provider_message(exc), entered=entered,
                            save_card=save_card, status=exc.status)


def _checkout(amount: Decimal, *, save_card: bool, form: str) -> ResponseReturnValue:
    """Create the Checkout Session for a form of the page, record it and 303 to it."""
    settings, member = _settings(), _member()
    topup = checkout.TopUpRequest(
        member.org_id, amount, settings.currency, member.member,
        # One form shown, one amount: a double click or a resubmission reuses the
        # session Stripe already made instead of opening a second one. Saving the card
        # asks Stripe for other parameters, so the box ticked is another key.
        start.stripe_idempotency_key(member.member, member.org_id,
                                     f"{form}\0{_attempt()}\0{amount}", save_card),
        save_card=save_card)
    created = start.create_session(settings, topup)
    assert isinstance(created, dict)  # no replay callback: always Stripe's session
    with tenant_transaction(get_db(), member.org_id, member.member) as conn:
        checkout.record_session(conn, topup, created)
    return redirect(created["url"], 303)


def _attempt() -> str:
    raw = request.form.get("attempt", "")
    return raw if len(raw) == 32 and all(c in "0123456789abcdef" for c in raw) else \
        uuid.uuid4().hex


def _amount_problem(settings: Settings, amount: Decimal) -> str:
    """Say, in the customer's terms, why check_amount refused the amount."""
    if settings.min_topup <= amount <= settings.max_topup:
        return "Use whole cents, such as 25 or 25.50."
    return (f"Choose an amount from {filters.exact(settings.min_topup, settings.currency)}"
            f" to {filters.exact(settings.max_topup, settings.currency)}.")


def _provider_message(exc: BillingError) -> str:
    if exc.status == 503:
        return "Payments are busy or unavailable right now. Please try again in a minute."
    return "The payment provider could not be reached. Nothing was charged; please try again."


def _back_to_section(message: str) -> ResponseReturnValue:
    """Post/redirect/get: the page again, at the section, saying what happened (once)."""
    flash(message, AUTO_TOP_UP_MESSAGE)
    return redirect(url_for(".billing", _anchor="auto-top-up"), 303)


def _auto_top_up_state() -> dict[str, Any]:
    member = _member()
    with tenant_transaction(get_db(), member.org_id, member.member) as conn:
        return auto_top_up_settings.read(conn, member.org_id)


@pages.route("/auto-top-up", methods=["POST"])
def save_auto_top_up() -> ResponseReturnValue:
    """Turn automatic top-ups on or off and set their threshold and target, as
    PUT /auto-top-up does; problems are shown next to their fields."""
    settings, member = _settings(), _member()
    with tenant_transaction(get_db(), member.org_id, member.member) as conn:
        before = auto_top_up_settings.read(conn, member.org_id)
        typed, wanted = auto_top_up.read_form(request.form, settings, before)
        if wanted is not None:
            try:
                with conn.transaction():  # a refusal leaves nothing behind
                    auto_top_up_settings.update(
                        conn, settings, member.org_id, enabled=wanted.enabled,
                        threshold=wanted.threshold, target=wanted.target)
            except ValidationFailed as exc:
                typed = auto_top_up.api_errors(typed, exc.fields or {"enabled": [exc.message]})
        after = auto_top_up_settings.read(conn, member.org_id)
    if typed.errors:
        return _render_page(auto_form=typed, status=400)
    last_before, last_after = before["last_attempt"], after["last_attempt"]
    started = last_after is not None and last_after["status"] == "pending" and (
        last_before is None or last_before["id"] != last_after["id"])
    return _back_to_section(auto_top_up.saved_message(after, started, settings.currency))


@pages.route("/auto-top-up/remove-card", methods=["POST"])
def remove_card() -> ResponseReturnValue:
    """Remove the saved card (detached at Stripe, forgotten here, automatic top-ups off),
    as DELETE /auto-top-up/card does."""
    settings, member = _settings(), _member()
    try:
        # cards.remove holds no transaction while Stripe answers.
        removed = cards.remove(start.app_stripe_client(settings), member.org_id, member.member)
    except BillingError as exc:  # Stripe down or refusing, not configured
        return _render_page(remove_error=_not_removed(exc), status=exc.status)
    if removed is None:  # a second click, another tab
        return _back_to_section("There is no card on file to remove.")
    card = auto_top_up.card_of({"brand": removed.brand, "last4": removed.last4,
                                "exp_month": removed.exp_month, "exp_year": removed.exp_year},
                               dt.datetime.now(dt.UTC).date())
    return _back_to_section(f"{card.label if card else 'Your card'} was removed and automatic"
                            " top-ups are off. To save a card again, tick “Save this card”"
                            " when you add funds.")


def _not_removed(exc: BillingError) -> str:
    if exc.status == 503:
        return "Cards cannot be removed right now. Your card is still on file; try again soon."
    return ("The payment provider could not be reached, so your card is still on file. "
            "Please try again.")


@pages.route("/auto-top-up/resume", methods=["POST"])
def resume_auto_top_up() -> ResponseReturnValue:
    """Pay now with a card saved for later: the new card turns paused automatic top-ups back
    on (sql save_card). The amount brings the balance back to the target."""
    settings, member = _settings(), _member()
    balance, _ = credits.get_account(get_db(), member.org_id, member.member)
    state = _auto_top_up_state()
    if not state["paused"]:  # resumed meanwhile (another tab, another member)
        return _back_to_section("Automatic top-ups are not paused: nothing was charged.")
    amount = auto_top_up.resume_amount(settings, balance, state["target_balance"])
    try:
        return _checkout(amount, save_card=True, form="resume")
    except BillingError as exc:
        return _render_page(resume_error=_provider_message(exc), status=exc.status)


@pages.route("/payment-status", methods=["GET"])
def payment_status() -> Response:
    """Tell the page's script whether the payment it waits for has been credited."""
    member = _member()
    session_id = request.args.get("session_id", "")[:255]
    with tenant_transaction(get_db(), member.org_id, member.member) as conn:
        result = checkout.outcome(conn, member.org_id, session_id)
    return jsonify({"state": result.state.value})


@pages.route("/transactions.csv", methods=["GET"])
def transactions_csv() -> Response:
    """Download the org's history as CSV (the current type filter applies)."""
    member = _member()
    return export.transactions_csv_response(member.org_id, member.member, start=None,
                                            end=None, type=_type_filter())


@pages.route("/sign-out", methods=["POST"])
def sign_out() -> ResponseReturnValue:
    """End this browser's session: its cookie opens nothing any more."""
    member = _member()
    sessions.end_session(get_db(), g.portal_token)
    session.clear()
    return render_template("signed_out.html", return_url=member.return_url)


# Errors on the page are pages too; the JSON API keeps its JSON errors.
_MESSAGES = {
    400: ("This form could not be sent", "The page may have been open for a long time, or "
          "the form did not come from it. Reload the billing page and try again."),
    401: ("Your billing session has ended", "For your security, billing sessions end after "
          "a period of inactivity or when you sign out. Open Billing again from your "
          "dashboard to continue."),
    404: ("Page not found", "There is nothing at this address."),
    405: ("Not allowed", "This address does not accept that kind of request."),
    429: ("Too many requests", "Please wait a moment and try again."),
    500: ("Something went wrong", "Nothing was charged. Please try again in a moment."),
    503: ("Temporarily unavailable", "Please try again in a moment."),
}


def error_page(status: int) -> Response:
    """An HTML error page for the billing page's part of the site."""
    title, detail = _MESSAGES.get(status, _MESSAGES[500 if status >= 500 else 400])
    return make_response(render_template("message.html", title=title, detail=detail), status)


@pages.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> ResponseReturnValue:
    return error_page(exc.code or 500)


@pages.errorhandler(BillingError)
def _billing_error(exc: BillingError) -> ResponseReturnValue:
    return error_page(exc.status)


@pages.errorhandler(Exception)
def _unexpected(exc: Exception) -> ResponseReturnValue:
    log.exception("billing page failed: %s", type(exc).__name__)
    return error_page(500)
