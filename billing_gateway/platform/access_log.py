"""gunicorn's logs as the service's: JSON lines through the service's formatter, which
redacts credentials (a portal link's token among them) from every finished line."""

from __future__ import annotations

from typing import Any

from gunicorn import glogging

from billing_gateway.platform.logs import json_formatter


class RedactingLogger(glogging.Logger):
    """gunicorn's logger writing JSON (credentials redacted by the formatter)."""

    def setup(self, cfg: Any) -> None:
        """Set up gunicorn's logging, then make both of its loggers write JSON."""
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(json_formatter())

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """One JSON line per request: method, path, status, bytes, duration, request id."""
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.logconfig_dict
                or self.cfg.syslog):
            return
        atoms = self.atoms(resp, req, environ, request_time)
        self.access_log.info("request", extra={
            "method": atoms["m"], "path": atoms["U"], "query": atoms["q"],
            "status": resp.status_code if hasattr(resp, "status_code") else atoms["s"],
            "bytes": atoms["B"], "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "remote": atoms["h"], "user_agent": atoms["a"],
            "request_id": atoms.get("{x-request-id}o") or None,
            "org": environ.get("billing.org"), "caller": environ.get("billing.caller"),
        })
