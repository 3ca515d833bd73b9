"""The commands: token, migrate, and serve on the embedded database as a new user runs it."""

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
import uuid
from decimal import Decimal
from pathlib import Path

import jwt
import psutil
import pytest

from billing_gateway.cli import main
from tests.conftest import TEST_SECRET


def test_token_prints_a_verifiable_jwt(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    org = uuid.uuid4()
    assert main(["token", "--org", str(org), "--role", "admin"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["org_id"] == str(org)
    assert claims["role"] == "admin"
    assert claims["exp"] > time.time()


def test_member_token_needs_an_org(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    assert main(["token", "--role", "member"]) == 2


def test_production_refuses_to_start_without_a_secret(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BILLING_JWT_SECRET", raising=False)
    monkeypatch.setenv("BILLING_ENV", "production")
    assert main(["token", "--role", "admin"]) == 2
    assert "BILLING_JWT_SECRET is required" in capsys.readouterr().err


def test_migrate_command_is_idempotent(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={  # noqa: S310  # local http URL
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310  # local URL
        return json.loads(response.read(), parse_float=Decimal)


class Served:
    """`billing-gateway serve` in its own process group, as a terminal runs it."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "BILLING_JWT_SECRET")}
        env["BILLING_DATA_DIR"] = str(data_dir)
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


def _postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


def test_serve_on_embedded_database_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = _free_port()
    served = Served(data_dir, port)
    try:
        org = served.demo_org()
        added = _call(f"{served.base}/api/billing/add-funds", served.token("ADMIN_TOKEN"),
                      {"amount": 25.5, "orgId": org})
        assert added["balance"] == Decimal("25.50")
    finally:
        assert served.ctrl_c() == 0
    assert not _postgres_running(data_dir / "pgdata"), "embedded PostgreSQL left running"

    again = Served(data_dir, port)
    try:
        assert again.demo_org() == org
        balance = _call(f"{again.base}/api/billing/balance", again.token("MEMBER_TOKEN"))
        assert balance == {"balance": Decimal("25.50"), "formatted": "$25.50", "currency": "usd",
                           "smsPrice": Decimal("0.0075")}
    finally:
        assert again.ctrl_c() == 0
    assert not _postgres_running(data_dir / "pgdata")
