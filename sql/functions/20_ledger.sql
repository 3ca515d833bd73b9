-- The ledger: locking an org, appending a row, credits, balances, the append-only
-- trigger, and the tenant policies of the ledger's tables.
--
-- Repeatable: applied after the numbered migrations whenever this file changes
-- (billing_gateway/platform/migrations.py). Each function and policy is defined here and
-- nowhere else; a change of a function's arguments or result type needs a numbered
-- migration that drops the old one first.

-- The ledger is append-only: corrections are new rows (adjustment, refund, reversal).
CREATE OR REPLACE FUNCTION billing_transactions_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing_transactions is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Lock the org's row, creating it at zero the first time the org is named.
CREATE OR REPLACE FUNCTION lock_organization(p_org_id uuid) RETURNS organizations
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

-- Refuse an amount no ledger write may carry: missing, NaN, zero or negative, or beyond
-- what numeric(18,4) holds (which includes 'Infinity').
CREATE OR REPLACE FUNCTION require_amount(p_amount numeric, p_what text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_amount IS NULL OR p_amount = 'NaN' OR p_amount <= 0 OR p_amount >= 1e14 THEN
        RAISE EXCEPTION '% amount must be positive and finite, got %', p_what, p_amount
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Current balance; zero for an org never seen.
CREATE OR REPLACE FUNCTION get_org_balance(p_org_id uuid) RETURNS numeric
    LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT sms_balance FROM organizations WHERE id = p_org_id), 0)
$$;

CREATE OR REPLACE FUNCTION has_sufficient_balance(p_org_id uuid, p_amount numeric) RETURNS boolean
    LANGUAGE sql STABLE AS $$
    SELECT get_org_balance(p_org_id) >= p_amount
$$;

-- Credit an org. A purchase with a payment_intent_id already credited returns that
-- credit (outcome 'duplicate') instead of paying twice; with another amount it is refused.
CREATE OR REPLACE FUNCTION add_credits(
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
        -- A paid top-up; written before the row so it comes before any balance.recovered
        -- the credit causes.
        PERFORM write_money_event(p_org_id, 'topup.succeeded', v_org.transaction_count + 1,
            jsonb_build_object('balance', money_json(v_org.sms_balance + p_amount),
                               'amount', money_json(p_amount),
                               'paymentIntentId', p_payment_intent_id));
    END IF;
    RETURN append_ledger_row(v_org, p_type, p_amount, NULL, NULL, p_payment_method,
                             p_payment_intent_id, NULL, NULL, p_description, p_metadata,
                             p_created_by);
END
$$;

-- Append one ledger row, with its id given, for a locked org and move its balance,
-- count and per-type count.
CREATE OR REPLACE FUNCTION append_ledger_row(
    p_id uuid, p_org organizations, p_type text, p_amount numeric,
    p_sms_count integer, p_cost_per_sms numeric, p_payment_method text,
    p_payment_intent_id text, p_message_id text, p_campaign_id text,
    p_description text, p_metadata jsonb, p_created_by text
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_after numeric := p_org.sms_balance + p_amount;
    v_type_seq bigint;
BEGIN
    UPDATE organizations
       SET sms_balance = v_after, transaction_count = transaction_count + 1, updated_at = now()
     WHERE id = p_org.id;
    INSERT INTO billing_transaction_counts AS c (org_id, type, n) VALUES (p_org.id, p_type, 1)
        ON CONFLICT (org_id, type) DO UPDATE SET n = c.n + 1
        RETURNING c.n INTO v_type_seq;
    INSERT INTO billing_transactions (
        id, org_id, seq, type_seq, type, amount, balance_before, balance_after, sms_count,
        cost_per_sms, payment_method, payment_intent_id, message_id, campaign_id,
        description, metadata, created_by)
    VALUES (
        p_id, p_org.id, p_org.transaction_count + 1, v_type_seq, p_type, p_amount,
        p_org.sms_balance, v_after, p_sms_count, p_cost_per_sms, p_payment_method,
        p_payment_intent_id, p_message_id, p_campaign_id, p_description, p_metadata,
        p_created_by);
    RETURN (p_id, v_after, CASE WHEN p_amount > 0 THEN 'credited' ELSE 'debited' END);
END
$$;

-- The same with a random id: a thin wrapper, so every ledger append has one body.
CREATE OR REPLACE FUNCTION append_ledger_row(
    p_org organizations, p_type text, p_amount numeric,
    p_sms_count integer, p_cost_per_sms numeric, p_payment_method text,
    p_payment_intent_id text, p_message_id text, p_campaign_id text,
    p_description text, p_metadata jsonb, p_created_by text
) RETURNS ledger_result
    LANGUAGE sql AS $$
    SELECT append_ledger_row(gen_random_uuid(), p_org, p_type, p_amount, p_sms_count,
                             p_cost_per_sms, p_payment_method, p_payment_intent_id,
                             p_message_id, p_campaign_id, p_description, p_metadata,
                             p_created_by)
$$;

-- GET /balance.
CREATE OR REPLACE FUNCTION api_account(p_org_id uuid, p_caller text) RETURNS account_view
    LANGUAGE plpgsql AS $$
DECLARE
    v account_view;
BEGIN
    PERFORM set_config('billing.org_id', p_org_id::text, true),
            set_config('billing.caller', coalesce(p_caller, ''), true);
    SELECT sms_balance, sms_price INTO v FROM organizations WHERE id = p_org_id;
    RETURN (coalesce(v.balance, 0), v.sms_price);
END
$$;

CREATE OR REPLACE TRIGGER billing_transactions_append_only
    BEFORE UPDATE OR DELETE ON billing_transactions
    FOR EACH ROW EXECUTE FUNCTION billing_transactions_append_only();

DROP POLICY IF EXISTS organizations_tenant ON organizations;
CREATE POLICY organizations_tenant ON organizations
    USING (id = billing_current_org()) WITH CHECK (id = billing_current_org());

DROP POLICY IF EXISTS billing_transactions_tenant ON billing_transactions;
CREATE POLICY billing_transactions_tenant ON billing_transactions
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS billing_transaction_counts_tenant ON billing_transaction_counts;
CREATE POLICY billing_transaction_counts_tenant ON billing_transaction_counts
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

-- Permissive policies are OR-ed with the single-tenant ones above. The sub-select makes
-- PostgreSQL evaluate the setting once per statement (an InitPlan), not once per row.
-- https://www.postgresql.org/docs/current/sql-createpolicy.html
DROP POLICY IF EXISTS organizations_tenant_set ON organizations;
CREATE POLICY organizations_tenant_set ON organizations
    USING ((SELECT billing_current_org_set()) ? id::text)
    WITH CHECK ((SELECT billing_current_org_set()) ? id::text);

DROP POLICY IF EXISTS billing_transactions_tenant_set ON billing_transactions;
CREATE POLICY billing_transactions_tenant_set ON billing_transactions
    USING ((SELECT billing_current_org_set()) ? org_id::text)
    WITH CHECK ((SELECT billing_current_org_set()) ? org_id::text);

DROP POLICY IF EXISTS billing_transaction_counts_tenant_set ON billing_transaction_counts;
CREATE POLICY billing_transaction_counts_tenant_set ON billing_transaction_counts
    USING ((SELECT billing_current_org_set()) ? org_id::text)
    WITH CHECK ((SELECT billing_current_org_set()) ? org_id::text);

DROP POLICY IF EXISTS idempotency_keys_caller ON idempotency_keys;
CREATE POLICY idempotency_keys_caller ON idempotency_keys
    USING (caller = billing_current_caller())
    WITH CHECK (caller = billing_current_caller()
                AND org_id IS NOT DISTINCT FROM billing_current_org());

-- An amount as GET /transactions shows it (billing_gateway.platform.money.to_number): 2
-- decimals, or the sub-cent digits it has (-0.0075, 0.015), exact; for the CSV export,
-- which PostgreSQL renders as text rather than Python, a row at a time.
CREATE OR REPLACE FUNCTION money_text(p_amount numeric) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT CASE WHEN p_amount = round(p_amount, 2) THEN round(p_amount, 2)::text
                      ELSE trim_scale(p_amount)::text END $$;

-- A timestamp as GET /transactions shows it (Python's isoformat in UTC, with a Z):
-- microseconds only when there are some.
CREATE OR REPLACE FUNCTION utc_text(p_at timestamptz) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
                 || CASE WHEN extract(microseconds FROM p_at)::bigint % 1000000 <> 0
                         THEN to_char(p_at AT TIME ZONE 'UTC', '.US') ELSE '' END
                 || 'Z' $$;
