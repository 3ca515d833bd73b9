-- Ledger core: organizations and their balance, the append-only transaction ledger,
-- idempotency keys, tenant isolation (RLS) and the seed's ledger functions.
--
-- Money is numeric(18,4): exact, 4 decimal places because SMS prices are often below a
-- cent (0.0075 x 1000 = 7.5000 exactly). numeric accepts 'NaN', and 'NaN' >= 0 is TRUE in
-- PostgreSQL (NaN sorts above every number), so every money column also rejects NaN.
-- https://www.postgresql.org/docs/current/datatype-numeric.html#DATATYPE-NUMERIC-DECIMAL
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).

-- The role every request runs under. It owns nothing, is not a superuser and cannot
-- bypass RLS, so the policies (sql/functions/) bind it even when DATABASE_URL names a
-- superuser: the pool runs SET ROLE billing_app on each connection (platform/db.py).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_app') THEN
        CREATE ROLE billing_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
GRANT billing_app TO CURRENT_USER;

CREATE TABLE organizations (
    id                 uuid PRIMARY KEY,
    sms_balance        numeric(18, 4) NOT NULL DEFAULT 0,
    -- Number of ledger rows of this org; also the seq of its newest row. Kept under the
    -- org's row lock so the history total is exact without COUNT(*).
    transaction_count  bigint NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT organizations_balance_non_negative
        CHECK (sms_balance >= 0 AND sms_balance <> 'NaN'),
    CONSTRAINT organizations_transaction_count_non_negative CHECK (transaction_count >= 0)
);

CREATE TABLE billing_transactions (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id             uuid NOT NULL REFERENCES organizations (id),
    -- Position in the org's ledger (1, 2, 3, ...) and in the org's ledger of this type.
    -- They make "page at offset N" an index range scan instead of skipping N rows.
    seq                bigint NOT NULL,
    type_seq           bigint NOT NULL,
    type               text NOT NULL,
    amount             numeric(18, 4) NOT NULL,
    balance_before     numeric(18, 4) NOT NULL,
    balance_after      numeric(18, 4) NOT NULL,
    sms_count          integer,
    cost_per_sms       numeric(18, 4),
    payment_method     text,
    payment_intent_id  text,
    message_id         text,
    campaign_id        text,
    description        text,
    metadata           jsonb,
    created_by         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT billing_transactions_type_check CHECK (
        type IN ('purchase', 'sms_send', 'refund', 'adjustment', 'bonus', 'reversal')),
    CONSTRAINT billing_transactions_amount_nonzero CHECK (amount <> 0 AND amount <> 'NaN'),
    CONSTRAINT billing_transactions_amount_sign CHECK (
        CASE
            WHEN type IN ('purchase', 'refund', 'bonus') THEN amount > 0
            WHEN type IN ('sms_send', 'reversal') THEN amount < 0
            ELSE true
        END),
    CONSTRAINT billing_transactions_chain CHECK (balance_before + amount = balance_after),
    CONSTRAINT billing_transactions_non_negative CHECK (
        balance_before >= 0 AND balance_after >= 0
        AND balance_before <> 'NaN' AND balance_after <> 'NaN'),
    CONSTRAINT billing_transactions_sms_count_positive CHECK (sms_count > 0),
    CONSTRAINT billing_transactions_cost_per_sms_non_negative
        CHECK (cost_per_sms >= 0 AND cost_per_sms <> 'NaN'),
    CONSTRAINT billing_transactions_text_sizes CHECK (
        length(payment_method) <= 50 AND length(payment_intent_id) <= 255
        AND length(message_id) <= 255 AND length(campaign_id) <= 255
        AND length(description) <= 1000 AND length(created_by) <= 255)
);

-- The seed's indexes, adapted to a ledger whose every query names its org:
--   idx_billing_transactions_org_id and _org_created -> (org_id, seq): newest first, any offset;
--   idx_billing_transactions_type -> (org_id, type, type_seq): a type filter, any offset;
--   idx_billing_transactions_created_at -> (org_id, created_at): time ranges per org (a global
--     created_at index would serve no tenant-scoped query and slow every insert);
--   idx_billing_transactions_payment_intent -> unique, one purchase per PaymentIntent.
CREATE UNIQUE INDEX idx_billing_transactions_org_seq
    ON billing_transactions (org_id, seq);
CREATE UNIQUE INDEX idx_billing_transactions_type
    ON billing_transactions (org_id, type, type_seq);
CREATE INDEX idx_billing_transactions_org_created
    ON billing_transactions (org_id, created_at);
CREATE UNIQUE INDEX idx_billing_transactions_payment_intent
    ON billing_transactions (payment_intent_id)
    WHERE type = 'purchase' AND payment_intent_id IS NOT NULL;
-- One charge per SMS message: a retried charge finds the first one instead of paying twice.
CREATE UNIQUE INDEX idx_billing_transactions_message
    ON billing_transactions (org_id, message_id)
    WHERE type = 'sms_send' AND message_id IS NOT NULL;

-- Per-org, per-type row counts: the exact total of a filtered history page, and the
-- source of type_seq. Updated under the org's row lock, like organizations.transaction_count.
CREATE TABLE billing_transaction_counts (
    org_id  uuid NOT NULL REFERENCES organizations (id),
    type    text NOT NULL,
    n       bigint NOT NULL CHECK (n >= 0),
    PRIMARY KEY (org_id, type)
);

-- Stored answers of POSTs sent with an Idempotency-Key. Scoped to the caller (the token's
-- subject); the fingerprint covers method, path, org and body, so the same key with another
-- body is refused. Written in the same transaction as the ledger effect it answers for.
CREATE TABLE idempotency_keys (
    caller          text NOT NULL,
    key             text NOT NULL,
    org_id          uuid NOT NULL,
    fingerprint     text NOT NULL,
    status_code     integer,
    response_body   text,
    transaction_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key),
    CONSTRAINT idempotency_keys_key_size CHECK (length(key) BETWEEN 1 AND 255)
);

-- Tenant isolation in depth: FORCE makes the policies bind the table owner as well, so
-- only superusers (never used for requests) see across tenants.
-- https://www.postgresql.org/docs/current/ddl-rowsecurity.html
ALTER TABLE organizations ENABLE ROW LEVEL SECURITY;
ALTER TABLE organizations FORCE ROW LEVEL SECURITY;

ALTER TABLE billing_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_transactions FORCE ROW LEVEL SECURITY;

ALTER TABLE billing_transaction_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_transaction_counts FORCE ROW LEVEL SECURITY;

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;

GRANT USAGE ON SCHEMA public TO billing_app;
GRANT SELECT, INSERT, UPDATE ON organizations TO billing_app;
GRANT SELECT, INSERT ON billing_transactions TO billing_app;
GRANT SELECT, INSERT, UPDATE ON billing_transaction_counts TO billing_app;
GRANT SELECT, INSERT, UPDATE ON idempotency_keys TO billing_app;

-- What a ledger write answers: the row written (or found), the balance after it, and
-- the outcome: credited, debited, duplicate (an earlier identical write) or insufficient_funds.
CREATE TYPE ledger_result AS (transaction_id uuid, balance numeric, outcome text);

