"""Helpers: `billing-gateway serve` in its own process, and calls to it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def call_json(url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={  # noqa: S310  # local http URL
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310  # local URL
        return json.loads(response.read(), parse_float=Decimal)


class Served:
    """`billing-gateway serve` in its own process group, as a terminal runs it."""

    def __init__(self, data_dir: Path, port: int, extra_env: dict[str, str] | None = None
                 ) -> None:
        # The README's first command on a fresh machine: no database, secret or Stripe keys.
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "BILLING_JWT_SECRET", "STRIPE_SECRET_KEY",
                            "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE")}
        env["BILLING_DATA_DIR"] = str(data_dir)
        env.update(extra_env or {})
        self.log = data_dir.parent / f"serve-{time.monotonic_ns()}.log"
        self.output = self.log.open("w")
        self.process = subprocess.Popen(  # noqa: S603  # our own console script
            [sys.executable, "-m", "billing_gateway.cli", "serve", "--port", str(port),
             "--workers", "1"],
            stdout=self.output, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=2):  # noqa: S310
                    return
            except (urllib.error.URLError, ConnectionError):
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.2)
        raise AssertionError("serve did not become ready:\n" + self.log.read_text())

    def token(self, name: str) -> str:
        match = re.search(rf"^{name}=(\S+)$", self.log.read_text(), re.MULTILINE)
        assert match, self.log.read_text()
        return match.group(1)

    def demo_org(self) -> str:
        match = re.search(r"Demo organization: (\S+)", self.log.read_text())
        assert match
        return match.group(1)

    def ctrl_c(self) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.output.close()
