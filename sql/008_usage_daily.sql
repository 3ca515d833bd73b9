-- Usage per org, UTC day and campaign: what GET /usage/summary reads instead of summing
-- the ledger (2,000,000 rows of an org over a year: docs/performance.md, "Usage summary").
-- Kept by charge_sms, charge_sms_bulk and refund_usage (sql/functions/30_usage.sql) in the
-- same transaction as the ledger row, under the org's row lock, and checked against the
-- ledger by the invariants (billing_gateway/ledger/invariants.py).
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).
CREATE TABLE usage_daily (
    org_id      uuid NOT NULL REFERENCES organizations (id),
    -- The UTC day of the ledger rows' created_at.
    day         date NOT NULL,
    -- NULL: usage charged without a campaign.
    campaign_id text,
    -- SMS charged (sms_send rows' sms_count); a usage refund does not lower it.
    sms_count   bigint NOT NULL,
    -- What was charged net of usage refunds, as a positive amount: minus the sum of the
    -- amounts of the day's sms_send rows and usage refunds (refund rows with a message_id).
    -- Plain numeric: a sum of numeric(18,4) amounts, exact at any size.
    amount      numeric NOT NULL,
    -- One row per (org, day, campaign), the usage without a campaign included: NULLS NOT
    -- DISTINCT makes NULL campaigns one key, so ON CONFLICT finds their row.
    -- https://www.postgresql.org/docs/15/sql-createtable.html (NULLS NOT DISTINCT, PG 15)
    CONSTRAINT usage_daily_key UNIQUE NULLS NOT DISTINCT (org_id, day, campaign_id),
    CONSTRAINT usage_daily_amount_exact CHECK (amount <> 'NaN' AND scale(amount) <= 4),
    CONSTRAINT usage_daily_sms_count_non_negative CHECK (sms_count >= 0)
);

ALTER TABLE usage_daily ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;

-- Written by the charge functions (INSERT ... ON CONFLICT DO UPDATE), read by the summary.
GRANT SELECT, INSERT, UPDATE ON usage_daily TO billing_app;

-- The existing ledger is summed into usage_daily by sql/functions/30_usage.sql while this
-- table exists, in the very transaction that installs the charge functions keeping it:
-- filled here, a charge by the old functions between this file's commit and that one's
-- would be missing from the rollup for good.
CREATE TABLE usage_daily_backfill_pending ();
