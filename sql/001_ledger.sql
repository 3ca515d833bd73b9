-- Ledger core: organizations and their balance, the append-only transaction ledger,
-- idempotency keys, tenant isolation (RLS) and the seed's ledger functions.
--
-- Money is numeric(18,4): exact, 4 decimal places because SMS prices are often below a
-- cent (0.0075 x 1000 = 7.5000 exactly). numeric accepts 'NaN', and 'NaN' >= 0 is TRUE in
-- PostgreSQL (NaN sorts above every number), so every money column also rejects NaN.
-- https://www.postgresql.org/docs/current/datatype-numeric.html#DATATYPE-NUMERIC-DECIMAL

-- The role every request runs under. It owns nothing, is not a superuser and cannot
-- bypass RLS, so the policies below bind it even when DATABASE_URL names a superuser:
-- the pool runs SET ROLE billing_app on each connection (billing_gateway/db.py).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_app') THEN
        CREATE ROLE billing_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    END IF;
END
$$;
GRANT billing_app TO CURRENT_USER;

-- The tenant of the current transaction. Set only with set_config(..., true), which is
-- transaction-local, so a pooled connection never carries one request's org into the next.
-- Unset or empty means no tenant: every policy then matches nothing.
CREATE FUNCTION billing_current_org() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('billing.org_id', true), '')::uuid $$;

CREATE FUNCTION billing_current_caller() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('billing.caller', true), '') $$;

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

-- The ledger is append-only: corrections are new rows (adjustment, refund, reversal).
CREATE FUNCTION billing_transactions_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing_transactions is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER billing_transactions_append_only
    BEFORE UPDATE OR DELETE ON billing_transactions
    FOR EACH ROW EXECUTE FUNCTION billing_transactions_append_only();

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
CREATE POLICY organizations_tenant ON organizations
    USING (id = billing_current_org()) WITH CHECK (id = billing_current_org());

ALTER TABLE billing_transactions ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_transactions FORCE ROW LEVEL SECURITY;
CREATE POLICY billing_transactions_tenant ON billing_transactions
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

ALTER TABLE billing_transaction_counts ENABLE ROW LEVEL SECURITY;
ALTER TABLE billing_transaction_counts FORCE ROW LEVEL SECURITY;
CREATE POLICY billing_transaction_counts_tenant ON billing_transaction_counts
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

ALTER TABLE idempotency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY idempotency_keys_caller ON idempotency_keys
    USING (caller = billing_current_caller())
    WITH CHECK (caller = billing_current_caller() AND org_id = billing_current_org());

GRANT USAGE ON SCHEMA public TO billing_app;
GRANT SELECT, INSERT, UPDATE ON organizations TO billing_app;
GRANT SELECT, INSERT ON billing_transactions TO billing_app;
GRANT SELECT, INSERT, UPDATE ON billing_transaction_counts TO billing_app;
GRANT SELECT, INSERT, UPDATE ON idempotency_keys TO billing_app;

-- What a ledger write answers: the row written (or found), the balance after it, and
-- the outcome: credited, debited, duplicate (an earlier identical write) or insufficient_funds.
CREATE TYPE ledger_result AS (transaction_id uuid, balance numeric, outcome text);

-- Lock the org's row, creating it at zero the first time the org is named.
CREATE FUNCTION lock_organization(p_org_id uuid) RETURNS organizations
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
BEGIN
    SELECT * INTO v_org FROM organizations WHERE id = p_org_id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO organizations (id) VALUES (p_org_id) ON CONFLICT (id) DO NOTHING;
        SELECT * INTO STRICT v_org FROM organizations WHERE id = p_org_id FOR UPDATE;
    END IF;
    RETURN v_org;
END
$$;

-- Append one ledger row for a locked org and move its balance, count and per-type count.
CREATE FUNCTION append_ledger_row(
    p_org organizations, p_type text, p_amount numeric,
    p_sms_count integer, p_cost_per_sms numeric, p_payment_method text,
    p_payment_intent_id text, p_message_id text, p_campaign_id text,
    p_description text, p_metadata jsonb, p_created_by text
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_after numeric := p_org.sms_balance + p_amount;
    v_type_seq bigint;
    v_id uuid;
BEGIN
    UPDATE organizations
       SET sms_balance = v_after, transaction_count = transaction_count + 1, updated_at = now()
     WHERE id = p_org.id;
    INSERT INTO billing_transaction_counts AS c (org_id, type, n) VALUES (p_org.id, p_type, 1)
        ON CONFLICT (org_id, type) DO UPDATE SET n = c.n + 1
        RETURNING c.n INTO v_type_seq;
    INSERT INTO billing_transactions (
        org_id, seq, type_seq, type, amount, balance_before, balance_after, sms_count,
        cost_per_sms, payment_method, payment_intent_id, message_id, campaign_id,
        description, metadata, created_by)
    VALUES (
        p_org.id, p_org.transaction_count + 1, v_type_seq, p_type, p_amount,
        p_org.sms_balance, v_after, p_sms_count, p_cost_per_sms, p_payment_method,
        p_payment_intent_id, p_message_id, p_campaign_id, p_description, p_metadata,
        p_created_by)
    RETURNING id INTO v_id;
    RETURN (v_id, v_after, CASE WHEN p_amount > 0 THEN 'credited' ELSE 'debited' END);
END
$$;

-- Refuse an amount no ledger write may carry: missing, NaN, zero or negative, or beyond
-- what numeric(18,4) holds (which includes 'Infinity').
CREATE FUNCTION require_amount(p_amount numeric, p_what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_amount IS NULL OR p_amount = 'NaN' OR p_amount <= 0 OR p_amount >= 1e14 THEN
        RAISE EXCEPTION '% amount must be positive and finite, got %', p_what, p_amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Current balance; zero for an org never seen.
CREATE FUNCTION get_org_balance(p_org_id uuid) RETURNS numeric
    LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT sms_balance FROM organizations WHERE id = p_org_id), 0)
$$;

CREATE FUNCTION has_sufficient_balance(p_org_id uuid, p_amount numeric) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT get_org_balance(p_org_id) >= p_amount
$$;

-- Credit an org. A purchase with a payment_intent_id already credited returns that
-- credit (outcome 'duplicate') instead of paying twice; with another amount it is refused.
CREATE FUNCTION add_credits(
    p_org_id uuid, p_amount numeric, p_type text DEFAULT 'purchase',
    p_payment_method text DEFAULT NULL, p_payment_intent_id text DEFAULT NULL,
    p_description text DEFAULT NULL, p_created_by text DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_prior billing_transactions;
BEGIN
    PERFORM require_amount(p_amount, 'credit');
    IF p_type NOT IN ('purchase', 'refund', 'adjustment', 'bonus') THEN
        RAISE EXCEPTION 'add_credits cannot write type %', p_type
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_org := lock_organization(p_org_id);
    IF p_type = 'purchase' AND p_payment_intent_id IS NOT NULL THEN
        SELECT * INTO v_prior FROM billing_transactions
         WHERE payment_intent_id = p_payment_intent_id AND type = 'purchase'
           AND org_id = p_org_id;
        IF FOUND THEN
            IF v_prior.amount <> p_amount THEN
                RAISE EXCEPTION 'payment intent % was credited with %, not %',
                    p_payment_intent_id, v_prior.amount, p_amount
                    USING ERRCODE = 'BG409';
            END IF;
            RETURN (v_prior.id, v_prior.balance_after, 'duplicate'::text);
        END IF;
    END IF;
    RETURN append_ledger_row(v_org, p_type, p_amount, NULL, NULL, p_payment_method,
                             p_payment_intent_id, NULL, NULL, p_description, p_metadata,
                             p_created_by);
END
$$;

-- Charge SMS usage. Never below zero: a charge larger than the balance writes nothing and
-- answers 'insufficient_funds'. A message_id already charged answers 'duplicate' with the
-- original charge, so a retried send is never paid twice.
CREATE FUNCTION deduct_credits(
    p_org_id uuid, p_amount numeric, p_sms_count integer DEFAULT NULL,
    p_cost_per_sms numeric DEFAULT NULL, p_message_id text DEFAULT NULL,
    p_campaign_id text DEFAULT NULL, p_description text DEFAULT NULL,
    p_created_by text DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_prior billing_transactions;
BEGIN
    PERFORM require_amount(p_amount, 'debit');
    v_org := lock_organization(p_org_id);
    IF p_message_id IS NOT NULL THEN
        SELECT * INTO v_prior FROM billing_transactions
         WHERE org_id = p_org_id AND message_id = p_message_id AND type = 'sms_send';
        IF FOUND THEN
            RETURN (v_prior.id, v_prior.balance_after, 'duplicate'::text);
        END IF;
    END IF;
    IF v_org.sms_balance < p_amount THEN
        RETURN (NULL::uuid, v_org.sms_balance, 'insufficient_funds'::text);
    END IF;
    RETURN append_ledger_row(v_org, 'sms_send', -p_amount, p_sms_count, p_cost_per_sms, NULL,
                             NULL, p_message_id, p_campaign_id, p_description, p_metadata,
                             p_created_by);
END
$$;
