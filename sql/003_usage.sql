-- SMS usage at campaign scale: bulk charges across many orgs in one statement, and usage
-- refunds (an undelivered message's charge given back, once).

-- The set of orgs one bulk request may touch, as a transaction-local setting like
-- billing.org_id ('{uuid,uuid,...}'); unset or empty means none.
CREATE FUNCTION billing_current_orgs() RETURNS uuid[]
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('billing.org_ids', true), '')::uuid[] $$;

-- Permissive policies are OR-ed with the single-tenant ones of 001. The sub-select makes
-- PostgreSQL evaluate the setting once per statement (an InitPlan), not once per row.
-- https://www.postgresql.org/docs/current/sql-createpolicy.html
CREATE POLICY organizations_tenant_set ON organizations
    USING (id = ANY ((SELECT billing_current_orgs())::uuid[]))
    WITH CHECK (id = ANY ((SELECT billing_current_orgs())::uuid[]));
CREATE POLICY billing_transactions_tenant_set ON billing_transactions
    USING (org_id = ANY ((SELECT billing_current_orgs())::uuid[]))
    WITH CHECK (org_id = ANY ((SELECT billing_current_orgs())::uuid[]));
CREATE POLICY billing_transaction_counts_tenant_set ON billing_transaction_counts
    USING (org_id = ANY ((SELECT billing_current_orgs())::uuid[]))
    WITH CHECK (org_id = ANY ((SELECT billing_current_orgs())::uuid[]));

-- A bulk request spans orgs, so its idempotency record belongs to no single org: the key
-- then carries no org, and only a request without a tenant may write such a record.
ALTER TABLE idempotency_keys ALTER COLUMN org_id DROP NOT NULL;
DROP POLICY idempotency_keys_caller ON idempotency_keys;
CREATE POLICY idempotency_keys_caller ON idempotency_keys
    USING (caller = billing_current_caller())
    WITH CHECK (caller = billing_current_caller()
                AND org_id IS NOT DISTINCT FROM billing_current_org());

-- One usage refund per charged message.
CREATE UNIQUE INDEX idx_billing_transactions_message_refund
    ON billing_transactions (org_id, message_id)
    WHERE type = 'refund' AND message_id IS NOT NULL;

-- What one item of a bulk charge did. item is its 1-based position in the request.
CREATE TYPE bulk_charge_result AS (
    item integer, transaction_id uuid, balance numeric, outcome text
);

-- Charge many messages, for many orgs, in one call. An item's price is its own cost, else
-- its org's sms_price, else p_default_price. Items of one org apply in request order, each
-- on its own: charged when the running balance covers it, else insufficient_funds (a later,
-- smaller item may still fit, as with single charges); a message already charged (before,
-- or earlier in this batch) is a duplicate that answers the original charge; a cost above
-- 1,000,000,000 is too_large. The writes are set-based: one INSERT for every ledger row,
-- one UPDATE for every org, one upsert for every per-type counter; only the decision
-- (which needs each org's running balance) walks the items, in memory.
CREATE FUNCTION deduct_credits_bulk(
    p_org_ids uuid[], p_sms_counts integer[], p_costs numeric[], p_default_price numeric,
    p_message_ids text[], p_campaign_ids text[], p_descriptions text[], p_created_by text
) RETURNS SETOF bulk_charge_result
    LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_org_ids);
    r record;
    v_org uuid;
    v_balance numeric;
    v_seq bigint;
    v_type_seq bigint;
    v_id uuid;
    -- the ledger rows to write
    w_id uuid[] := '{}';
    w_pos integer[] := '{}';
    w_amount numeric[] := '{}';
    w_price numeric[] := '{}';
    w_before numeric[] := '{}';
    w_seq bigint[] := '{}';
    w_type_seq bigint[] := '{}';
    -- each org's state after the batch
    o_id uuid[] := '{}';
    o_balance numeric[] := '{}';
    o_seq bigint[] := '{}';
    o_type_seq bigint[] := '{}';
    -- every item's answer
    a_pos integer[] := '{}';
    a_id uuid[] := '{}';
    a_balance numeric[] := '{}';
    a_outcome text[] := '{}';
    a_first integer[] := '{}';  -- for a repeat within the batch: its first occurrence
BEGIN
    IF cardinality(p_sms_counts) <> n OR cardinality(p_costs) <> n
       OR cardinality(p_message_ids) <> n OR cardinality(p_campaign_ids) <> n
       OR cardinality(p_descriptions) <> n THEN
        RAISE EXCEPTION 'deduct_credits_bulk: arrays of different lengths'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(p_org_ids, NULL) IS NOT NULL
       OR array_position(p_message_ids, NULL) IS NOT NULL
       OR EXISTS (SELECT FROM unnest(p_sms_counts) c WHERE c IS NULL OR c <= 0)
       OR EXISTS (SELECT FROM unnest(p_costs) c WHERE c = 'NaN' OR c <= 0 OR c >= 1e14)
       OR p_default_price IS NULL OR p_default_price = 'NaN' OR p_default_price <= 0 THEN
        RAISE EXCEPTION 'deduct_credits_bulk: every item needs an org, a message, a positive'
            ' count and a positive price'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Create unseen orgs, then lock every org of the batch in id order: two bulk requests
    -- (or a bulk and single charges, which lock one org) never wait on each other in a cycle.
    INSERT INTO organizations (id)
        SELECT DISTINCT o FROM unnest(p_org_ids) AS o ORDER BY o
        ON CONFLICT (id) DO NOTHING;
    PERFORM FROM organizations WHERE id = ANY (p_org_ids) ORDER BY id FOR UPDATE;

    FOR r IN
        WITH items AS (
            SELECT i.org_id, i.sms_count, i.cost, i.message_id, i.pos::integer AS pos
              FROM unnest(p_org_ids, p_sms_counts, p_costs, p_message_ids)
                   WITH ORDINALITY AS i(org_id, sms_count, cost, message_id, pos)
        ), firsts AS (
            SELECT org_id, message_id, min(pos) AS first_pos
              FROM items GROUP BY org_id, message_id
        )
        SELECT i.org_id, i.pos, f.first_pos,
               coalesce(i.cost, o.sms_price, p_default_price) AS price,
               i.sms_count * coalesce(i.cost, o.sms_price, p_default_price) AS amount,
               t.id AS prior_id, t.balance_after AS prior_balance,
               o.sms_balance, o.transaction_count, coalesce(c.n, 0) AS type_count
          FROM items i
          JOIN firsts f USING (org_id, message_id)
          JOIN organizations o ON o.id = i.org_id
          LEFT JOIN billing_transaction_counts c
                 ON c.org_id = i.org_id AND c.type = 'sms_send'
          LEFT JOIN billing_transactions t
                 ON t.org_id = i.org_id AND t.message_id = i.message_id
                AND t.type = 'sms_send'
         ORDER BY i.org_id, i.pos
    LOOP
        IF v_org IS DISTINCT FROM r.org_id THEN
            IF v_org IS NOT NULL THEN
                o_id := o_id || v_org;
                o_balance := o_balance || v_balance;
                o_seq := o_seq || v_seq;
                o_type_seq := o_type_seq || v_type_seq;
            END IF;
            v_org := r.org_id;
            v_balance := r.sms_balance;
            v_seq := r.transaction_count;
            v_type_seq := r.type_count;
        END IF;
        a_pos := a_pos || r.pos;
        a_first := a_first || CASE WHEN r.pos <> r.first_pos AND r.prior_id IS NULL
                                   THEN r.first_pos END;
        IF r.prior_id IS NOT NULL THEN
            a_id := a_id || r.prior_id;
            a_balance := a_balance || r.prior_balance;
            a_outcome := a_outcome || 'duplicate'::text;
        ELSIF r.pos <> r.first_pos THEN
            -- A repeat inside this batch: resolved against its first occurrence below.
            a_id := a_id || NULL::uuid;
            a_balance := a_balance || NULL::numeric;
            a_outcome := a_outcome || 'repeat'::text;
        ELSIF r.amount > 1e9 THEN
            a_id := a_id || NULL::uuid;
            a_balance := a_balance || v_balance;
            a_outcome := a_outcome || 'too_large'::text;
        ELSIF v_balance < r.amount THEN
            a_id := a_id || NULL::uuid;
            a_balance := a_balance || v_balance;
            a_outcome := a_outcome || 'insufficient_funds'::text;
        ELSE
            v_id := gen_random_uuid();
            v_seq := v_seq + 1;
            v_type_seq := v_type_seq + 1;
            w_id := w_id || v_id;
            w_pos := w_pos || r.pos;
            w_amount := w_amount || r.amount;
            w_price := w_price || r.price;
            w_before := w_before || v_balance;
            w_seq := w_seq || v_seq;
            w_type_seq := w_type_seq || v_type_seq;
            v_balance := v_balance - r.amount;
            a_id := a_id || v_id;
            a_balance := a_balance || v_balance;
            a_outcome := a_outcome || 'charged'::text;
        END IF;
    END LOOP;
    IF v_org IS NOT NULL THEN
        o_id := o_id || v_org;
        o_balance := o_balance || v_balance;
        o_seq := o_seq || v_seq;
        o_type_seq := o_type_seq || v_type_seq;
    END IF;

    IF cardinality(w_id) > 0 THEN
        INSERT INTO billing_transactions (
            id, org_id, seq, type_seq, type, amount, balance_before, balance_after,
            sms_count, cost_per_sms, message_id, campaign_id, description, created_by)
        SELECT w.id, p_org_ids[w.pos], w.seq, w.type_seq, 'sms_send', -w.amount,
               w.before, w.before - w.amount, p_sms_counts[w.pos], w.price,
               p_message_ids[w.pos], p_campaign_ids[w.pos], p_descriptions[w.pos],
               p_created_by
          FROM unnest(w_id, w_pos, w_amount, w_price, w_before, w_seq, w_type_seq)
               AS w(id, pos, amount, price, before, seq, type_seq);
        UPDATE organizations o
           SET sms_balance = s.balance, transaction_count = s.seq, updated_at = now()
          FROM unnest(o_id, o_balance, o_seq) AS s(id, balance, seq)
         WHERE o.id = s.id AND o.transaction_count <> s.seq;
        INSERT INTO billing_transaction_counts AS c (org_id, type, n)
            SELECT s.id, 'sms_send', s.n FROM unnest(o_id, o_type_seq) AS s(id, n)
             WHERE s.n > 0
            ON CONFLICT (org_id, type) DO UPDATE SET n = excluded.n WHERE c.n <> excluded.n;
    END IF;

    -- A repeat answers as its first occurrence did: the same charge (as a duplicate), or
    -- the same refusal.
    RETURN QUERY
        SELECT a.pos,
               coalesce(a.id, CASE WHEN f.outcome IN ('charged', 'duplicate') THEN f.id END),
               coalesce(a.balance, f.balance),
               CASE WHEN f.pos IS NULL THEN a.outcome
                    WHEN f.outcome IN ('charged', 'duplicate') THEN 'duplicate'
                    ELSE f.outcome END
          FROM unnest(a_pos, a_id, a_balance, a_outcome, a_first)
               AS a(pos, id, balance, outcome, first)
          LEFT JOIN unnest(a_pos, a_id, a_balance, a_outcome) AS f(pos, id, balance, outcome)
                 ON f.pos = a.first
         ORDER BY a.pos;
END
$$;

-- Give back the charge of one message (say, an SMS that was never delivered): at most
-- what was charged, once. Outcomes: credited, duplicate (the earlier refund),
-- not_charged (no charge for this message), exceeds_charge (amount above the charge).
CREATE FUNCTION refund_usage(
    p_org_id uuid, p_message_id text, p_amount numeric DEFAULT NULL,
    p_description text DEFAULT NULL, p_created_by text DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_charge billing_transactions;
    v_prior billing_transactions;
    v_amount numeric;
BEGIN
    IF p_amount IS NOT NULL THEN
        PERFORM require_amount(p_amount, 'refund');
    END IF;
    v_org := lock_organization(p_org_id);
    SELECT * INTO v_charge FROM billing_transactions
     WHERE org_id = p_org_id AND message_id = p_message_id AND type = 'sms_send';
    IF NOT FOUND THEN
        RETURN (NULL::uuid, v_org.sms_balance, 'not_charged'::text);
    END IF;
    SELECT * INTO v_prior FROM billing_transactions
     WHERE org_id = p_org_id AND message_id = p_message_id AND type = 'refund';
    IF FOUND THEN
        RETURN (v_prior.id, v_prior.balance_after, 'duplicate'::text);
    END IF;
    v_amount := coalesce(p_amount, -v_charge.amount);
    IF v_amount > -v_charge.amount THEN
        RETURN (NULL::uuid, v_org.sms_balance, 'exceeds_charge'::text);
    END IF;
    RETURN append_ledger_row(v_org, 'refund', v_amount, v_charge.sms_count,
                             v_charge.cost_per_sms, NULL, NULL, p_message_id,
                             v_charge.campaign_id, p_description, p_metadata, p_created_by);
END
$$;
