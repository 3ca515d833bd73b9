"""GET /transactions.csv: every transaction as GET /transactions shows it, exact, streamed in
batches, filtered by UTC days and type, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.ledger import export
from billing_gateway.platform import json_codec, money
from billing_gateway.platform.config import Settings
from tests.plugins.servers import free_port
from tests.plugins.service import TokenFactory

CSV = "/api/billing/transactions.csv"


def _rows(response) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


def _json_history(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> list[dict]:
    body = client.get(f"/api/billing/transactions?limit=100&orgId={org}",
                      headers=auth("admin")).get_json()
    return list(reversed(body["transactions"]))  # oldest first, as the export


@pytest.fixture
def ledger(client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    """Credits, charges with and without campaigns, a bulk charge and a usage refund."""
    credit(org, "10.00", paymentMethod="card", paymentIntentId="pi_1",
           description="Top-up, with a comma and \"quotes\"")
    credit(org, "0.50", type="bonus", description="=HYPERLINK(\"http://evil\",\"x\")")
    for n, campaign in enumerate(["spring", None, "@summer"]):
        body = {"orgId": str(org), "smsCount": n + 1, "costPerSms": "0.0075",
                "messageId": f"m{n}", **({"campaignId": campaign} if campaign else {})}
        assert client.post("/api/billing/deduct", headers=auth("service"),
                           json=body).status_code == 201
    bulk = [{"orgId": str(org), "smsCount": 1, "costPerSms": "0.0125", "messageId": f"b{n}",
             "description": "-1+1"} for n in range(3)]
    assert client.post("/api/billing/deduct/bulk", headers=auth("service"),
                       json={"charges": bulk}).status_code == 200
    assert client.post("/api/billing/usage/refund", headers=auth("service"),
                       json={"orgId": str(org), "messageId": "m1"}).status_code == 201


def _as_json_shows_it(column: str, cell: str) -> object:
    """The value a CSV cell stands for, in the types the JSON answer has."""
    if cell == "":
        return None
    if cell.startswith("'"):
        cell = cell[1:]  # the formula guard
    if column in export.MONEY_COLUMNS:
        return Decimal(cell)
    if column == "sms_count":
        return int(cell)
    if column == "metadata":
        return json_codec.loads(cell)
    return cell


def test_rows_equal_the_json_history_field_by_field(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, ledger: None) -> None:
    rows = _rows(client.get(CSV, headers=auth("member", org)))
    history = _json_history(client, auth, org)
    assert len(rows) == len(history) == 9
    for row, transaction in zip(rows, history, strict=True):
        assert list(row) == list(export.COLUMNS)
        assert {column: _as_json_shows_it(column, cell) for column, cell in row.items()} == {
            column: transaction[column] for column in export.COLUMNS}
    assert [row["amount"] for row in rows][2:5] == ["-0.0075", "-0.015", "-0.0225"]
    assert rows[0]["amount"] == "10.00"
    assert rows[-1]["type"] == "refund" and rows[-1]["amount"] == "0.015"


def test_text_that_a_spreadsheet_would_run_begins_with_a_quote(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, ledger: None) -> None:
    rows = _rows(client.get(CSV, headers=auth("member", org)))
    assert rows[0]["description"] == "Top-up, with a comma and \"quotes\""
    assert rows[1]["description"] == "'=HYPERLINK(\"http://evil\",\"x\")"
    assert rows[4]["campaign_id"] == "'@summer"
    assert {row["description"] for row in rows if row["cost_per_sms"] == "0.0125"} == {"'-1+1"}
    # Numbers keep their sign: only text is guarded.
    assert all(not row["amount"].startswith("'") for row in rows)
    assert export.defuse("\tx") == "'\tx" and export.defuse("\rx") == "'\rx"
    assert export.defuse("+1") == "'+1" and export.defuse("a=b") == "a=b"


def test_header_only_for_an_org_without_transactions(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> None:
    response = client.get(CSV, headers=auth("member", org))
    assert response.get_data(as_text=True) == ",".join(export.COLUMNS) + "\r\n"


def test_type_and_day_filters(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                              ledger: None) -> None:
    headers = auth("member", org)
    charges = _rows(client.get(f"{CSV}?type=sms_send", headers=headers))
    assert [row["message_id"] for row in charges] == ["m0", "m1", "m2", "b0", "b1", "b2"]
    today = dt.datetime.now(dt.UTC).date()
    yesterday, tomorrow = today - dt.timedelta(days=1), today + dt.timedelta(days=1)
    assert len(_rows(client.get(f"{CSV}?from={today}&to={today}", headers=headers))) == 9
    assert len(_rows(client.get(f"{CSV}?to={today}", headers=headers))) == 9
    assert _rows(client.get(f"{CSV}?to={yesterday}", headers=headers)) == []
    assert _rows(client.get(f"{CSV}?from={tomorrow}", headers=headers)) == []
    assert len(_rows(client.get(f"{CSV}?from={today}&type=bonus", headers=headers))) == 1
    assert _rows(client.get(f"{CSV}?to=9999-12-31&type=reversal", headers=headers)) == []


def test_member_cannot_export_another_org_and_admin_can(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, other_org: uuid.UUID,
        ledger: None) -> None:
    refused = client.get(f"{CSV}?orgId={org}", headers=auth("member", other_org))
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "forbidden"
    assert len(_rows(client.get(f"{CSV}?orgId={org}", headers=auth("admin")))) == 9
    assert _rows(client.get(CSV, headers=auth("member", other_org))) == []
    assert client.get(CSV).status_code == 401


@pytest.mark.parametrize(("query", "field"), [
    ("from=2026-02-01&to=2026-01-31", "from"),
    ("from=2026-13-01", "from"),
    ("to=31-01-2026", "to"),
    ("type=gift", "type"),
])
def test_bad_parameters_are_400_with_fields(client: FlaskClient, auth: TokenFactory,
                                            org: uuid.UUID, query: str, field: str) -> None:
    response = client.get(f"{CSV}?{query}", headers=auth("member", org))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert field in response.get_json()["error"]["fields"]


def test_attachment_streamed_in_batches_holding_no_connection_between_them(
        app: Flask, client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "BATCH_ROWS", 4)
    for n in range(10):
        credit(org, f"{n + 1}.00")
    pool = app.extensions["billing_pool"]
    response = client.get(f"{CSV}?to=2999-01-01", headers=auth("member", org),
                          buffered=False)
    assert response.is_streamed
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="transactions-{org}-to-2999-01-01.csv"')
    chunks = response.response  # the generator, not yet run past the first batch
    first = next(chunks)
    assert first.decode().count("\r\n") == 1 + 4  # header and the first batch
    # Between batches no connection is out of the pool.
    assert pool.get_stats()["pool_size"] - pool.get_stats()["pool_available"] == 0
    rest = b"".join(chunks)
    response.close()
    amounts = [line.split(",")[2] for line in (first + rest).decode().splitlines()[1:]]
    assert amounts == [f"{n + 1}.00" for n in range(10)]


def test_a_client_gone_mid_stream_leaves_no_connection_out(
        app: Flask, client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "BATCH_ROWS", 2)
    for n in range(5):
        credit(org, f"{n + 1}.00")
    pool = app.extensions["billing_pool"]
    response = client.get(CSV, headers=auth("member", org), buffered=False)
    next(response.response)
    next(response.response)
    response.close()  # what the WSGI server does when the client disconnects
    stats = pool.get_stats()
    assert stats["pool_size"] - stats["pool_available"] == 0


def test_rows_appended_during_an_export_are_not_in_it(
        app: Flask, client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "BATCH_ROWS", 2)
    for n in range(3):
        credit(org, f"{n + 1}.00")
    response = client.get(CSV, headers=auth("member", org), buffered=False)
    first = next(response.response)
    credit(org, "9.00")  # after the export began: the export is the ledger as it was then
    body = first + b"".join(response.response)
    response.close()
    assert [line.split(",")[2] for line in body.decode().splitlines()[1:]] == [
        "1.00", "2.00", "3.00"]


def test_the_page_calls_the_same_response(app: Flask, credit, org: uuid.UUID) -> None:
    credit(org, "5.00")
    with app.test_request_context("/billing/transactions.csv"):
        response = export.transactions_csv_response(org, "portal", start=None, end=None,
                                                    type="purchase")
        assert response.is_streamed
        body = b"".join(response.response)
        response.close()
    assert body.decode().splitlines()[1].split(",")[1:3] == ["purchase", "5.00"]


def test_an_unreachable_database_is_503_before_any_byte(
        settings: Settings, auth: TokenFactory, org: uuid.UUID) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/billing"  # nothing listens
    app = create_app(settings.with_overrides(database_url=nowhere, pool_timeout=0.5))
    try:
        response = app.test_client().get(CSV, headers=auth("member", org))
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "service_unavailable"
    finally:
        app.extensions["billing_pool"].close()


@pytest.mark.parametrize("amount", ["0.0075", "-0.0150", "10", "10.5000", "-0.0100",
                                    "99999999999999.9999", "-123456789.1234", "0.0001"])
def test_sql_shows_an_amount_as_the_json_does(owner_conn, amount: str) -> None:  # type: ignore[no-untyped-def]
    shown = owner_conn.execute("SELECT money_text(%s::numeric(18, 4))",
                               (Decimal(amount),)).fetchone()[0]
    assert shown == money.format_number(Decimal(amount))


@pytest.mark.parametrize("at", ["2026-01-31T23:59:59.000001+00:00", "2026-01-31T00:00:00+00:00",
                                "2026-07-01T01:30:00.5+02:00"])
def test_sql_shows_a_time_as_the_json_does(owner_conn, at: str) -> None:  # type: ignore[no-untyped-def]
    moment = dt.datetime.fromisoformat(at)
    owner_conn.execute("SET TimeZone = 'America/New_York'")  # the session's zone is no matter
    try:
        shown = owner_conn.execute("SELECT utc_text(%s)", (moment,)).fetchone()[0]
    finally:
        owner_conn.execute("RESET TimeZone")
    assert shown == moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
