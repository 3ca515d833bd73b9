"""The gthread worker, answering gunicorn's own refusals in the contract's JSON error shape.

gunicorn refuses a request it cannot parse (a bad request line, a line over
`limit_request_line`, too many or too large headers) before the app sees it, and writes
an HTML page itself in `Worker.handle_error` (gunicorn/workers/base.py). This worker lets
gunicorn decide the status and log the refusal as it always does, and sends the caller
{"error": {"code", "message"}} instead of the HTML.
"""

from __future__ import annotations

import json
import uuid
from http import HTTPStatus
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# The contract's codes for the statuses gunicorn answers by itself (see README's Errors).
# 414 and 431 are the caller's request being too big to read, like a bad line: a request
# to fix, not to retry, so validation_error, with the status saying which limit.
_CODES = {
    403: "forbidden",
    413: "payload_too_large",
    500: "internal_error",
}
_MESSAGES = {
    400: "Malformed HTTP request",
    403: "Request forbidden",
    414: "Request line too long",
    417: "Expectation not supported",
    431: "Request header fields too large",
    500: "Internal error",
    501: "Transfer coding not supported",
}
# What of gunicorn's reason for a refusal the caller sees (it may echo the request).
_DETAIL_CHARS = 200


class _ErrorPageCatcher:
    """Stands in for the client socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.written = bytearray()

    def gettimeout(self) -> float:
        return 0.0  # util.write_nonblock then writes without toggling blocking mode

    def setblocking(self, flag: bool) -> None:
        """Nothing to switch: nothing is sent from here."""

    def sendall(self, data: bytes) -> None:
        self.written += data

    def status(self) -> int | None:
        """The status of the page gunicorn wrote ("HTTP/1.1 414 URI Too Long"), if any."""
        line = bytes(self.written).split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def error_code(status: int) -> str:
    """The contract's error code for a status gunicorn answers."""
    return _CODES.get(status, "internal_error" if status >= 500 and status != 501
                      else "validation_error")


def json_refusal(status: int, detail: str) -> bytes:
    """A complete HTTP/1.1 response carrying the JSON error shape; the connection closes."""
    message = _MESSAGES.get(status, "Request refused")
    if detail and status != 500:  # a 500's detail is for the log only, like the app's
        message = f"{message}: {detail[:_DETAIL_CHARS]}"
    body = json.dumps({"error": {"code": error_code(status), "message": message}}).encode()
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            "Connection: close\r\n"
            "Content-Type: application/json\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            f"X-Request-Id: {uuid.uuid4().hex}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JsonErrorsWorker(ThreadWorker):
    """gunicorn's gthread worker whose own error answers are JSON, not HTML."""

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        """Let gunicorn choose the status and log; send the contract's JSON instead."""
        page = _ErrorPageCatcher()
        super().handle_error(req, page, addr, exc)
        status = page.status()
        if status is None:  # gunicorn chose to send nothing: neither do we
            return
        try:
            util.write_nonblock(client, json_refusal(status, str(exc)))
        except Exception:  # the caller may be gone; gunicorn ignores this the same way
            self.log.debug("Failed to send error message.")
