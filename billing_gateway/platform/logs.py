"""Logs as JSON lines (python-json-logger), each with the request id, org and caller of the
request it belongs to, and never a credential: tokens, keys and link tokens are redacted
from the final line, whatever code wrote it."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

from flask import Response, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

LOGGER = "billing_gateway"
REDACTED = "[redacted]"

# What must never reach a log line, whoever wrote it (our code, gunicorn, a library's
# exception text): the credential part of each is replaced, the rest of the line is kept.
_SECRETS = (
    # /billing/portal/<token>: a one-time link opens a customer's billing page.
    (re.compile(r"(/billing/portal/)[^/?#\s\"'\\]+"), r"\g<1>" + REDACTED),
    # JWTs (three base64url parts, the first two JSON objects), with or without "Bearer".
    (re.compile(r"eyJ[\w-]*\.eyJ[\w-]*\.[\w-]*"), REDACTED),
    # Stripe secret and restricted keys, webhook signing secrets (ours and Stripe's).
    (re.compile(r"\b(sk|rk)_(live|test)_\w+"), REDACTED),
    (re.compile(r"\bwhsec_\w+"), REDACTED),
)


def redact(text: str) -> str:
    """Replace every credential in the text."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class RequestContext(logging.Filter):
    """Add the current request's id, org and caller to each record (None outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Annotate the record; never drop it."""
        if has_request_context():
            record.request_id, record.org, record.caller = request_context()
        else:
            for name in ("request_id", "org", "caller"):
                if not hasattr(record, name):  # gunicorn's access line brings its own
                    setattr(record, name, None)
        return True


def request_context() -> tuple[str | None, str | None, str | None]:
    """The current request's id, org and caller."""
    # The API's caller (a JWT) or the billing page's member (a session).
    who = g.get("caller") or g.get("member")
    found = g.get("org_id") or getattr(who, "org_id", None)
    caller = (getattr(who, "subject", None) or getattr(who, "member", None)
              if who is not None else None)
    return g.get("request_id"), str(found) if found is not None else None, caller


def keep_for_access_log(response: Response) -> Response:
    """Leave the org and caller in the WSGI environ, where gunicorn's access line, written
    after the request context is gone, finds them (platform/access_log.py)."""
    _, org, caller = request_context()
    request.environ["billing.org"], request.environ["billing.caller"] = org, caller
    return response


class RedactingJsonFormatter(JsonFormatter):
    """python-json-logger's formatter, with credentials redacted from the finished line."""

    def format(self, record: logging.LogRecord) -> str:
        """Format the record as one JSON object, then redact it."""
        return redact(super().format(record))


def json_formatter() -> RedactingJsonFormatter:
    """The one log format: time, level, logger, message, request id, org, caller, extras."""
    return RedactingJsonFormatter(
        ["asctime", "levelname", "name", "message", "request_id", "org", "caller"],
        rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        datefmt="%Y-%m-%dT%H:%M:%S%z",
    )


def configure() -> None:
    """Send the service's logs to stderr as JSON (once per process, whatever create_app
    calls follow)."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    if any(getattr(h, "billing_json", False) for h in logger.handlers):
        return
    handler: Any = logging.StreamHandler(sys.stderr)
    handler.billing_json = True
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestContext())
    logger.addHandler(handler)
    logger.propagate = False
