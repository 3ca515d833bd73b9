"""An org's transactions as CSV, streamed in ledger order, a batch at a time."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import flask
import psycopg

from billing_gateway.platform.db import BillingPool, get_pool, require_tenant, tenant_transaction
from billing_gateway.platform.errors import ServiceUnavailable

# The fields of GET /transactions, in its order.
COLUMNS = ("id", "type", "amount", "balance_before", "balance_after", "sms_count",
           "cost_per_sms", "payment_method", "description", "created_at",
           "payment_intent_id", "message_id", "campaign_id", "metadata")
MONEY_COLUMNS = frozenset({"amount", "balance_before", "balance_after", "cost_per_sms"})
# Free text a caller wrote: the only cells a spreadsheet could take for a formula.
TEXT_COLUMNS = frozenset({"type", "payment_method", "description", "payment_intent_id",
                          "message_id", "campaign_id", "metadata"})

# Rows read per query: about 1 MB of CSV, a few milliseconds of the database.
BATCH_ROWS = 5000

# A spreadsheet runs a cell beginning with one of these as a formula (CSV injection);
# OWASP's advice is to begin such a cell with a single quote, which shows it as text.
# https://owasp.org/www-community/attacks/CSV_Injection
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def defuse(text: str) -> str:
    """Return text a spreadsheet shows as text, never runs as a formula."""
    return "'" + text if text.startswith(_FORMULA_START) else text


# PostgreSQL renders every cell as text (money_text and utc_text show amounts and times as
# GET /transactions does; a jsonb's text is JSON): measured on 2,000,000 rows, building
# Decimals, UUIDs and datetimes in Python only to print them again was most of the time.
_CELLS = {column: column + "::text" for column in COLUMNS}
_CELLS.update({column: f"money_text({column})" for column in MONEY_COLUMNS})
_CELLS["created_at"] = "utc_text(created_at)"
_TEXT_POSITIONS = tuple(i for i, column in enumerate(COLUMNS) if column in TEXT_COLUMNS)


def _cells(row: tuple[str | None, ...]) -> list[str | None]:
    """A row of text cells with every text a spreadsheet could run defused."""
    cells = list(row)
    for i in _TEXT_POSITIONS:
        text = cells[i]
        if text is not None and text.startswith(_FORMULA_START):
            cells[i] = "'" + text
    return cells


def csv_lines(rows: list[tuple[str | None, ...]], *, header: bool = False) -> bytes:
    """Render rows of text cells in COLUMNS order (and the header first) as CSV in UTF-8."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    if header:
        writer.writerow(COLUMNS)
    writer.writerows(map(_cells, rows))  # None is written as an empty cell
    return out.getvalue().encode()


_COLUMN_LIST = ", ".join(_CELLS[column] for column in COLUMNS)

# Rows past the last one read, up to the newest one when the export began: the ledger is
# append-only, so positions up to that bound read the same at any later time, and batches
# read in separate transactions still make one consistent export. Each batch is an index
# range scan of (org_id, seq), or (org_id, type, type_seq) with a type; the bounds are
# plain parameters so that row level security lets them be index conditions (history.py).
_BATCH_ALL = f"""SELECT {_COLUMN_LIST}, seq FROM billing_transactions
    WHERE org_id = %(org)s AND seq > %(after)s AND seq <= %(upto)s {{dates}}
    ORDER BY seq LIMIT %(limit)s"""

_BATCH_OF_TYPE = f"""SELECT {_COLUMN_LIST}, type_seq FROM billing_transactions
    WHERE org_id = %(org)s AND type = %(type)s AND type_seq > %(after)s
      AND type_seq <= %(upto)s {{dates}}
    ORDER BY type_seq LIMIT %(limit)s"""

_DATES = {
    (False, False): "",
    (True, False): "AND created_at >= %(since)s",
    (False, True): "AND created_at < %(before)s",
    (True, True): "AND created_at >= %(since)s AND created_at < %(before)s",
}

_NEWEST_ALL = "SELECT transaction_count FROM organizations WHERE id = %(org)s"
_NEWEST_OF_TYPE = ("SELECT n FROM billing_transaction_counts"
                   " WHERE org_id = %(org)s AND type = %(type)s")


def _utc_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


@dataclass
class TransactionExport:
    """Where an export of an org's ledger stands: its filters, its bound, its last row."""

    org_id: UUID
    start: dt.date | None = None
    end: dt.date | None = None
    type: str | None = None
    upto: int | None = None  # the newest position when the export began
    after: int = 0  # the position of the last row read
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # `to` is a whole UTC day: rows before the next midnight (none past the calendar).
        before = (None if self.end is None or self.end == dt.date.max
                  else _utc_midnight(self.end + dt.timedelta(days=1)))
        since = None if self.start is None else _utc_midnight(self.start)
        self.params = {"org": self.org_id, "type": self.type, "since": since,
                       "before": before, "limit": BATCH_ROWS}
        query = _BATCH_ALL if self.type is None else _BATCH_OF_TYPE
        self.query = query.format(dates=_DATES[since is not None, before is not None])

    def next_batch(self, conn: psycopg.Connection) -> list[tuple[str | None, ...]]:
        """Read the next rows as text cells in COLUMNS order (empty at the end), in the
        org's tenant transaction."""
        require_tenant(self.org_id)
        if self.upto is None:
            row = conn.execute(_NEWEST_ALL if self.type is None else _NEWEST_OF_TYPE,
                               self.params).fetchone()
            self.upto = row[0] if row else 0
        if self.after >= self.upto:
            return []
        rows = conn.execute(self.query, {**self.params, "after": self.after,
                                         "upto": self.upto}).fetchall()
        # Positions run on past rows the dates leave out; the next batch starts after them.
        self.after = rows[-1][-1] if rows else self.upto
        return [row[:-1] for row in rows]


def _read_batch(pool: BillingPool, export: TransactionExport,
                subject: str) -> list[tuple[str | None, ...]]:
    """Borrow a connection for one batch only: a slow client never holds one."""
    with pool.connection() as conn, tenant_transaction(conn, export.org_id, subject) as tx:
        return export.next_batch(tx)


def _stream(pool: BillingPool, export: TransactionExport, subject: str,
            first: list[tuple[str | None, ...]]) -> Iterator[bytes]:
    yield csv_lines(first, header=True)
    rows = first
    while rows:
        rows = _read_batch(pool, export, subject)
        if rows:
            yield csv_lines(rows)


def transactions_csv_response(
    org_id: UUID,
    subject: str,
    *,
    start: dt.date | None,
    end: dt.date | None,
    type: str | None,
) -> flask.Response:
    """Stream the org's transactions (oldest first, `start`..`end` UTC days, both included,
    of one type) as a CSV attachment, in batches of BATCH_ROWS.

    The caller has decided that `subject` may read `org_id`. The first batch is read here,
    so a database that is down answers 503 before any byte is sent; each later batch
    borrows a pooled connection for its own query and gives it back before the client
    reads it, so an export holds no connection while the client is slow or gone.
    """
    pool = get_pool()
    export = TransactionExport(org_id, start, end, type)
    try:
        first = _read_batch(pool, export, subject)
    except psycopg.OperationalError as exc:  # psycopg_pool's PoolTimeout is one too
        raise ServiceUnavailable("The database is not reachable; retry the request") from exc
    name = "transactions-" + "-".join(
        part for part in (str(org_id), start and f"from-{start}", end and f"to-{end}", type)
        if part)
    return flask.Response(
        _stream(pool, export, subject, first), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"',
                 # An org's ledger: no shared cache may keep it.
                 "Cache-Control": "no-store"})
