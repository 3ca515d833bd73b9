"""A WSGI app served on a loopback port from a background thread (stripe-sim, tests)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


def _not_ready(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """What a request gets before `serve` is called: nothing is served yet."""
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"not serving yet\n"]


class _QuietHandler(WSGIRequestHandler):
    """No access line per request: stripe-sim and test receivers would flood the output."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log nothing."""


class LocalServer:
    """A threaded WSGI server bound at once, serving an app given later.

    Binding before the app exists lets port 0 pick a free port with no window in which
    another socket takes it (a port probed first and bound later can be taken: CI saw
    "Address already in use"), and lets the app be built knowing its own address.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(host, port, _not_ready, threaded=True,
                                                   request_handler=_QuietHandler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"local-server-{self.url}")

    def serve(self, app: Any) -> LocalServer:
        """Start serving `app`."""
        self.server.app = app
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(5)
        self.server.server_close()
