-- SMS usage: single and bulk charges, usage refunds, and the ids derived from (org, message).
--
-- Repeatable: applied after the numbered migrations whenever this file changes
-- (billing_gateway/platform/migrations.py). Each function and policy is defined here and
-- nowhere else; a change of a function's arguments or result type needs a numbered
-- migration that drops the old one first.

-- The id of the ledger row of a message's charge (type sms_send) or usage refund (type
-- refund) is derived from (type, org, message), so "was this message charged?" is a
-- primary-key lookup. Looking it up by (org_id, message_id) left the choice of index to
-- the planner, and with statistics older than a fast-growing org it chose
-- (org_id, type, type_seq) and read every earlier charge of the org for each message
-- (measured: a 1,000-charge batch taking 30, 120, 200 ... 450 ms as the org grew, until
-- autovacuum analyzed the table). The unique indexes on (org_id, message_id) stay as the
-- last guard. md5 is not used for secrecy here, only as a 128-bit hash into uuid space.
CREATE OR REPLACE FUNCTION message_transaction_id(p_type text, p_org_id uuid, p_message_id text)
    RETURNS uuid
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT md5(p_type || '/' || p_org_id::text || '/' || p_message_id)::uuid $$;

-- The UTC day of a ledger row: the day usage_daily and GET /usage/summary count it on.
-- AT TIME ZONE 'UTC' turns the timestamptz into UTC wall-clock time, whatever the
-- session's TimeZone. https://www.postgresql.org/docs/current/functions-datetime.html#FUNCTIONS-DATETIME-ZONECONVERT
CREATE OR REPLACE FUNCTION utc_day(p_at timestamptz) RETURNS date
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT (p_at AT TIME ZONE 'UTC')::date $$;

-- Add a charge (or, with no SMS and a negative amount, a usage refund) to the org's usage
-- of today. Called under the org's row lock, after the ledger row is appended: the row's
-- created_at defaults to now(), the start of the transaction, which stays the same for
-- the whole transaction, so the row and its usage fall on the same day.
-- plpgsql, not sql: PL/pgSQL keeps the INSERT's plan for the session, where an SQL function
-- that cannot be inlined (an INSERT cannot) is planned again on every call before
-- PostgreSQL 18. https://www.postgresql.org/docs/current/plpgsql-implementation.html#PLPGSQL-PLAN-CACHING
CREATE OR REPLACE FUNCTION record_usage(
    p_org_id uuid, p_campaign_id text, p_sms_count bigint, p_amount numeric
) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_daily AS u (org_id, day, campaign_id, sms_count, amount)
    VALUES (p_org_id, utc_day(now()), p_campaign_id, p_sms_count, p_amount)
    ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE
        SET sms_count = u.sms_count + excluded.sms_count, amount = u.amount + excluded.amount;
END
$$;

-- A single charge of an amount, keyed on the derived id like bulk charges.
CREATE OR REPLACE FUNCTION charge_sms(
    p_org_id uuid, p_amount numeric, p_sms_count integer DEFAULT NULL,
    p_cost_per_sms numeric DEFAULT NULL, p_message_id text DEFAULT NULL,
    p_campaign_id text DEFAULT NULL, p_description text DEFAULT NULL,
    p_created_by text DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_id uuid := message_transaction_id('sms_send', p_org_id, p_message_id);
    v_prior billing_transactions;
    v_row ledger_result;
BEGIN
    PERFORM require_amount(p_amount, 'charge');
    v_org := lock_organization(p_org_id);
    IF v_id IS NOT NULL THEN
        SELECT * INTO v_prior FROM billing_transactions WHERE id = v_id;
        IF FOUND THEN
            RETURN (v_prior.id, v_prior.balance_after, 'duplicate'::text);
        END IF;
    END IF;
    IF v_org.sms_balance < p_amount THEN
        PERFORM note_refused_charges(ARRAY[p_org_id]);
        RETURN (NULL::uuid, v_org.sms_balance, 'insufficient_funds'::text);
    END IF;
    v_row := append_ledger_row(coalesce(v_id, gen_random_uuid()), v_org, 'sms_send', -p_amount,
                               p_sms_count, p_cost_per_sms, NULL, NULL, p_message_id,
                               p_campaign_id, p_description, p_metadata, p_created_by);
    PERFORM record_usage(p_org_id, p_campaign_id, coalesce(p_sms_count, 0), p_amount);
    -- The words of every charge, single or bulk: charged, duplicate, insufficient_funds.
    RETURN (v_row.transaction_id, v_row.balance, 'charged'::text);
END
$$;

-- Charge many messages, for many orgs, in one call. An item's price is its own cost, else
-- its org's sms_price, else p_default_price. Items of one org apply in request order, each
-- on its own: charged when the running balance covers it, else insufficient_funds (a later,
-- smaller item may still fit, as with single charges); a message already charged (before,
-- or earlier in this batch) is a duplicate that answers the original charge; a cost above
-- 1,000,000,000 is too_large.
--
-- Set-based: one query reads every item's org, price and earlier charge, and computes each
-- org's running total with a window. When every org covers its items (the usual case) that
-- is the whole decision; otherwise a loop over the items, in memory, decides with each org's
-- running balance. Then one INSERT writes every ledger row, one UPDATE every org, one
-- upsert every per-type counter.
CREATE OR REPLACE FUNCTION charge_sms_bulk(
    p_org_ids uuid[], p_sms_counts integer[], p_costs numeric[], p_default_price numeric,
    p_message_ids text[], p_campaign_ids text[], p_descriptions text[], p_created_by text
) RETURNS SETOF bulk_charge_result
    LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_org_ids);
    v_fits boolean;
    -- every item, in (org, position) order
    d_pos integer[]; d_org uuid[]; d_price numeric[]; d_amount numeric[];
    d_prior uuid[]; d_prior_balance numeric[]; d_first integer[]; d_candidate boolean[];
    d_balance numeric[]; d_count bigint[]; d_type_count bigint[];
    d_spent numeric[]; d_k bigint[];
    -- the ledger rows to write
    w_id uuid[] := '{}'; w_pos integer[] := '{}'; w_org uuid[] := '{}';
    w_amount numeric[] := '{}'; w_price numeric[] := '{}'; w_before numeric[] := '{}';
    w_seq bigint[] := '{}'; w_type_seq bigint[] := '{}';
    -- every item's answer; a_first: for a repeat within the batch, its first occurrence
    a_pos integer[] := '{}'; a_id uuid[] := '{}'; a_balance numeric[] := '{}';
    a_outcome text[] := '{}'; a_first integer[] := '{}';
    -- the orgs with a charge refused for want of funds (balance.depleted)
    r_org uuid[] := '{}';
    -- the orgs with any charge refused for want of funds (an auto top-up may be due)
    t_org uuid[] := '{}';
    -- the loop's running state of one org
    v_org uuid; v_balance numeric; v_seq bigint; v_type_seq bigint; v_id uuid;
BEGIN
    IF cardinality(p_sms_counts) <> n OR cardinality(p_costs) <> n
       OR cardinality(p_message_ids) <> n OR cardinality(p_campaign_ids) <> n
       OR cardinality(p_descriptions) <> n THEN
        RAISE EXCEPTION 'charge_sms_bulk: arrays of different lengths'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF array_position(p_org_ids, NULL) IS NOT NULL
       OR array_position(p_message_ids, NULL) IS NOT NULL
       OR EXISTS (SELECT FROM unnest(p_sms_counts) c WHERE c IS NULL OR c <= 0)
       OR EXISTS (SELECT FROM unnest(p_costs) c WHERE c = 'NaN' OR c <= 0 OR c >= 1e14)
       OR p_default_price IS NULL OR p_default_price = 'NaN' OR p_default_price <= 0 THEN
        RAISE EXCEPTION 'charge_sms_bulk: every item needs an org, a message, a positive'
            ' count and a positive price'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Create unseen orgs, then lock every org of the batch in id order: two bulk requests
    -- (or a bulk and single charges, which lock one org) never wait on each other in a cycle.
    INSERT INTO organizations (id)
        SELECT DISTINCT o FROM unnest(p_org_ids) AS o ORDER BY o
        ON CONFLICT (id) DO NOTHING;
    PERFORM FROM organizations WHERE id = ANY (p_org_ids) ORDER BY id FOR UPDATE;

    -- A candidate is an item that would be charged if its org's balance covers it: not
    -- charged before, not a repeat within the batch, not too large.
    WITH items AS (
        SELECT i.org_id, i.sms_count, i.cost, i.message_id, i.pos::integer AS pos,
               message_transaction_id('sms_send', i.org_id, i.message_id) AS charge_id
          FROM unnest(p_org_ids, p_sms_counts, p_costs, p_message_ids)
               WITH ORDINALITY AS i(org_id, sms_count, cost, message_id, pos)
    ), firsts AS (
        SELECT org_id, message_id, min(pos) AS first_pos FROM items
         GROUP BY org_id, message_id
    ), priced AS (
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
          -- A plain column, not the function call: under RLS only a leakproof join clause
          -- (uuid = uuid) may become an index condition; md5() is not leakproof.
          LEFT JOIN billing_transactions t ON t.id = i.charge_id
    ), flagged AS (
        SELECT p.*, (p.prior_id IS NULL AND p.pos = p.first_pos AND p.amount <= 1e9)
                    AS candidate
          FROM priced p
    ), running AS (
        SELECT f.*,
               sum(CASE WHEN candidate THEN amount ELSE 0 END)
                   OVER (PARTITION BY org_id ORDER BY pos) AS spent,
               count(*) FILTER (WHERE candidate)
                   OVER (PARTITION BY org_id ORDER BY pos) AS k
          FROM flagged f
    )
    SELECT coalesce(bool_and(spent <= sms_balance) FILTER (WHERE candidate), true),
           array_agg(pos ORDER BY org_id, pos), array_agg(org_id ORDER BY org_id, pos),
           array_agg(price ORDER BY org_id, pos), array_agg(amount ORDER BY org_id, pos),
           array_agg(prior_id ORDER BY org_id, pos),
           array_agg(prior_balance ORDER BY org_id, pos),
           array_agg(first_pos ORDER BY org_id, pos),
           array_agg(candidate ORDER BY org_id, pos),
           array_agg(sms_balance ORDER BY org_id, pos),
           array_agg(transaction_count ORDER BY org_id, pos),
           array_agg(type_count ORDER BY org_id, pos),
           array_agg(spent ORDER BY org_id, pos), array_agg(k ORDER BY org_id, pos)
      INTO v_fits, d_pos, d_org, d_price, d_amount, d_prior, d_prior_balance, d_first,
           d_candidate, d_balance, d_count, d_type_count, d_spent, d_k
      FROM running;

    IF v_fits THEN
        -- Every org covers all its items: the running totals are the answer.
        SELECT coalesce(array_agg(x.new_id) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.pos) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.org) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.amount) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.price) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.balance - x.spent + x.amount) FILTER (WHERE x.candidate),
                        '{}'),
               coalesce(array_agg(x.count + x.k) FILTER (WHERE x.candidate), '{}'),
               coalesce(array_agg(x.type_count + x.k) FILTER (WHERE x.candidate), '{}'),
               array_agg(x.pos),
               array_agg(CASE WHEN x.candidate THEN x.new_id
                              WHEN x.prior IS NOT NULL THEN x.prior END),
               array_agg(CASE WHEN x.candidate THEN x.balance - x.spent
                              WHEN x.prior IS NOT NULL THEN x.prior_balance
                              WHEN x.pos = x.first THEN x.balance - x.spent END),
               array_agg(CASE WHEN x.candidate THEN 'charged'
                              WHEN x.prior IS NOT NULL THEN 'duplicate'
                              WHEN x.pos <> x.first THEN 'repeat'
                              ELSE 'too_large' END),
               array_agg(CASE WHEN x.prior IS NULL AND x.pos <> x.first THEN x.first END)
          INTO w_id, w_pos, w_org, w_amount, w_price, w_before, w_seq, w_type_seq,
               a_pos, a_id, a_balance, a_outcome, a_first
          FROM (SELECT u.*, CASE WHEN u.candidate
                                 THEN message_transaction_id('sms_send', u.org,
                                                             p_message_ids[u.pos]) END AS new_id
                  FROM unnest(d_pos, d_org, d_price, d_amount, d_prior, d_prior_balance,
                              d_first, d_candidate, d_balance, d_count, d_type_count,
                              d_spent, d_k)
                       AS u(pos, org, price, amount, prior, prior_balance, first, candidate,
                            balance, count, type_count, spent, k)) x;
    ELSE
        -- Some org runs short: decide item by item with each org's running balance.
        FOR i IN 1 .. coalesce(cardinality(d_pos), 0) LOOP
            IF v_org IS DISTINCT FROM d_org[i] THEN
                v_org := d_org[i];
                v_balance := d_balance[i];
                v_seq := d_count[i];
                v_type_seq := d_type_count[i];
            END IF;
            a_pos := a_pos || d_pos[i];
            a_first := a_first || CASE WHEN d_prior[i] IS NULL AND d_pos[i] <> d_first[i]
                                       THEN d_first[i] END;
            IF d_prior[i] IS NOT NULL THEN
                a_id := a_id || d_prior[i];
                a_balance := a_balance || d_prior_balance[i];
                a_outcome := a_outcome || 'duplicate'::text;
            ELSIF d_pos[i] <> d_first[i] THEN
                a_id := a_id || NULL::uuid;
                a_balance := a_balance || NULL::numeric;
                a_outcome := a_outcome || 'repeat'::text;
            ELSIF NOT d_candidate[i] OR v_balance < d_amount[i] THEN
                a_id := a_id || NULL::uuid;
                a_balance := a_balance || v_balance;
                a_outcome := a_outcome || CASE WHEN d_candidate[i] THEN 'insufficient_funds'
                                               ELSE 'too_large' END;
                IF d_candidate[i] THEN
                    t_org := t_org || v_org;
                END IF;
                -- A depletion only when the balance at this refusal is already below the
                -- threshold (as for a single charge): a refusal at or above it is only too
                -- large, even if a later item of the batch takes the balance below.
                IF d_candidate[i] AND v_balance < (
                        SELECT coalesce(alert_threshold, low_balance_default())
                          FROM organizations WHERE id = v_org) THEN
                    r_org := r_org || v_org;
                END IF;
            ELSE
                v_id := message_transaction_id('sms_send', v_org, p_message_ids[d_pos[i]]);
                v_seq := v_seq + 1;
                v_type_seq := v_type_seq + 1;
                w_id := w_id || v_id;
                w_pos := w_pos || d_pos[i];
                w_org := w_org || v_org;
                w_amount := w_amount || d_amount[i];
                w_price := w_price || d_price[i];
                w_before := w_before || v_balance;
                w_seq := w_seq || v_seq;
                w_type_seq := w_type_seq || v_type_seq;
                v_balance := v_balance - d_amount[i];
                a_id := a_id || v_id;
                a_balance := a_balance || v_balance;
                a_outcome := a_outcome || 'charged'::text;
            END IF;
        END LOOP;
    END IF;

    IF cardinality(w_id) > 0 THEN
        INSERT INTO billing_transactions (
            id, org_id, seq, type_seq, type, amount, balance_before, balance_after,
            sms_count, cost_per_sms, message_id, campaign_id, description, created_by)
        SELECT w.id, w.org, w.seq, w.type_seq, 'sms_send', -w.amount, w.before,
               w.before - w.amount, p_sms_counts[w.pos], w.price, p_message_ids[w.pos],
               p_campaign_ids[w.pos], p_descriptions[w.pos], p_created_by
          FROM unnest(w_id, w_pos, w_org, w_amount, w_price, w_before, w_seq, w_type_seq)
               AS w(id, pos, org, amount, price, before, seq, type_seq);
        -- Each org ends at its last row's balance and position.
        UPDATE organizations o
           SET sms_balance = s.after, transaction_count = s.seq, updated_at = now()
          FROM (SELECT DISTINCT ON (org) org, before - amount AS after, seq, type_seq
                  FROM unnest(w_org, w_before, w_amount, w_seq, w_type_seq)
                       AS w(org, before, amount, seq, type_seq)
                 ORDER BY org, seq DESC) s
         WHERE o.id = s.org;
        INSERT INTO billing_transaction_counts AS c (org_id, type, n)
            SELECT org, 'sms_send', max(type_seq)
              FROM unnest(w_org, w_type_seq) AS w(org, type_seq)
             GROUP BY org
            ON CONFLICT (org_id, type) DO UPDATE SET n = excluded.n;
        -- Today's usage of each (org, campaign) of the batch, one row each: ON CONFLICT DO
        -- UPDATE may not touch a row twice in one statement, hence the GROUP BY (which
        -- groups NULL campaigns together, as usage_daily_key does).
        INSERT INTO usage_daily AS u (org_id, day, campaign_id, sms_count, amount)
            SELECT w.org, utc_day(now()), p_campaign_ids[w.pos], sum(p_sms_counts[w.pos]),
                   sum(w.amount)
              FROM unnest(w_org, w_pos, w_amount) AS w(org, pos, amount)
             GROUP BY w.org, p_campaign_ids[w.pos]
            ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE
                SET sms_count = u.sms_count + excluded.sms_count,
                    amount = u.amount + excluded.amount;
    END IF;

    -- After the balances moved, so an org that fell below its threshold in this batch has
    -- its balance.low before the balance.depleted of its refusal.
    -- Any refusal for want of funds may start an auto top-up, as a single charge's does
    -- (sql/functions/70_autotopup.sql); note_refused_charges then finds it in flight.
    IF cardinality(t_org) > 0 THEN
        PERFORM auto_topup_after_refusal(t_org);
    END IF;
    IF cardinality(r_org) > 0 THEN
        PERFORM note_refused_charges(r_org);
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
CREATE OR REPLACE FUNCTION refund_usage(
    p_org_id uuid, p_message_id text, p_amount numeric DEFAULT NULL,
    p_description text DEFAULT NULL, p_created_by text DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_charge billing_transactions;
    v_prior billing_transactions;
    v_id uuid := message_transaction_id('refund', p_org_id, p_message_id);
    v_amount numeric;
    v_row ledger_result;
BEGIN
    IF p_amount IS NOT NULL THEN
        PERFORM require_amount(p_amount, 'refund');
    END IF;
    v_org := lock_organization(p_org_id);
    SELECT * INTO v_charge FROM billing_transactions
     WHERE id = message_transaction_id('sms_send', p_org_id, p_message_id);
    IF NOT FOUND THEN
        RETURN (NULL::uuid, v_org.sms_balance, 'not_charged'::text);
    END IF;
    SELECT * INTO v_prior FROM billing_transactions WHERE id = v_id;
    IF FOUND THEN
        RETURN (v_prior.id, v_prior.balance_after, 'duplicate'::text);
    END IF;
    v_amount := coalesce(p_amount, -v_charge.amount);
    IF v_amount > -v_charge.amount THEN
        RETURN (NULL::uuid, v_org.sms_balance, 'exceeds_charge'::text);
    END IF;
    v_row := append_ledger_row(v_id, v_org, 'refund', v_amount, v_charge.sms_count,
                               v_charge.cost_per_sms, NULL, NULL, p_message_id,
                               v_charge.campaign_id, p_description, p_metadata, p_created_by);
    -- Netted on the refund's own day, in the charge's campaign; the SMS stay counted.
    PERFORM record_usage(p_org_id, v_charge.campaign_id, 0, -v_amount);
    RETURN v_row;
END
$$;

-- POST /deduct: the price is the request's, else the org's, else p_default_price; a cost
-- above 1,000,000,000 is refused (outcome too_large) before anything is written.
CREATE OR REPLACE FUNCTION api_charge(
    p_org_id uuid, p_caller text, p_sms_count integer, p_cost_per_sms numeric,
    p_default_price numeric, p_message_id text, p_campaign_id text, p_description text
) RETURNS charge_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_price numeric;
    v_amount numeric;
    v ledger_result;
BEGIN
    PERFORM set_config('billing.org_id', p_org_id::text, true),
            set_config('billing.caller', coalesce(p_caller, ''), true);
    v_price := coalesce(p_cost_per_sms,
                        (SELECT sms_price FROM organizations WHERE id = p_org_id),
                        p_default_price);
    v_amount := p_sms_count * v_price;
    IF v_amount > 1e9 THEN
        RETURN (NULL::uuid, NULL::numeric, 'too_large'::text, v_price, v_amount);
    END IF;
    v := charge_sms(p_org_id, v_amount, p_sms_count, v_price, p_message_id,
                    p_campaign_id, coalesce(p_description, 'Sent ' || p_sms_count || ' SMS'),
                    p_caller, NULL);
    RETURN (v.transaction_id, v.balance, v.outcome, v_price, v_amount);
END
$$;

-- The names from before "charge" became the one word for it (2026-11-25), as thin
-- wrappers, for one release only: while a deployment migrates, the processes of the
-- previous release still call them, and must keep charging. The release after drops them
-- in a numbered migration (DROP FUNCTION deduct_credits(uuid, numeric, integer, numeric,
-- text, text, text, text, jsonb), deduct_credits_bulk(...), api_deduct(...)).
CREATE OR REPLACE FUNCTION deduct_credits(
    p_org_id uuid, p_amount numeric, p_sms_count integer DEFAULT NULL,
    p_cost_per_sms numeric DEFAULT NULL, p_message_id text DEFAULT NULL,
    p_campaign_id text DEFAULT NULL, p_description text DEFAULT NULL,
    p_created_by text DEFAULT NULL, p_metadata jsonb DEFAULT NULL
) RETURNS ledger_result
    LANGUAGE sql AS $$
    SELECT * FROM charge_sms(p_org_id, p_amount, p_sms_count, p_cost_per_sms, p_message_id,
                             p_campaign_id, p_description, p_created_by, p_metadata)
$$;

CREATE OR REPLACE FUNCTION deduct_credits_bulk(
    p_org_ids uuid[], p_sms_counts integer[], p_costs numeric[], p_default_price numeric,
    p_message_ids text[], p_campaign_ids text[], p_descriptions text[], p_created_by text
) RETURNS SETOF bulk_charge_result
    LANGUAGE sql AS $$
    SELECT * FROM charge_sms_bulk(p_org_ids, p_sms_counts, p_costs, p_default_price,
                                  p_message_ids, p_campaign_ids, p_descriptions, p_created_by)
$$;

CREATE OR REPLACE FUNCTION api_deduct(
    p_org_id uuid, p_caller text, p_sms_count integer, p_cost_per_sms numeric,
    p_default_price numeric, p_message_id text, p_campaign_id text, p_description text
) RETURNS charge_result
    LANGUAGE sql AS $$
    SELECT * FROM api_charge(p_org_id, p_caller, p_sms_count, p_cost_per_sms, p_default_price,
                             p_message_id, p_campaign_id, p_description)
$$;

-- usage_daily belongs to its org, as the ledger's tables do (sql/functions/20_ledger.sql);
-- a bulk charge writes it for every org of its tenant set.
DROP POLICY IF EXISTS usage_daily_tenant ON usage_daily;
CREATE POLICY usage_daily_tenant ON usage_daily
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS usage_daily_tenant_set ON usage_daily;
CREATE POLICY usage_daily_tenant_set ON usage_daily
    USING ((SELECT billing_current_org_set()) ? org_id::text)
    WITH CHECK ((SELECT billing_current_org_set()) ? org_id::text);

-- Once, after sql/008_usage_daily.sql: sum the ledger written before usage_daily existed
-- into it, in this file's transaction, so that no charge falls between the backfill and
-- the functions above, which keep usage_daily from then on. The migrating role owns the
-- tables, and FORCE binds even the owner to the policies (it would read no row at all):
-- NO FORCE lets it read and write every org for this transaction only (ALTER TABLE is
-- transactional like the rest). ALTER TABLE takes the ACCESS EXCLUSIVE lock, which waits
-- for the charges in flight and holds the ledger's readers and writers until the commit;
-- re-creating a table's policies takes the same lock on every re-application anyway.
-- https://www.postgresql.org/docs/current/ddl-rowsecurity.html
-- https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES
DO $$
BEGIN
    IF to_regclass('usage_daily_backfill_pending') IS NULL THEN
        RETURN;
    END IF;
    LOCK TABLE billing_transactions, usage_daily IN ACCESS EXCLUSIVE MODE;
    ALTER TABLE billing_transactions NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE usage_daily NO FORCE ROW LEVEL SECURITY;
    INSERT INTO usage_daily AS u (org_id, day, campaign_id, sms_count, amount)
        SELECT org_id, utc_day(created_at), campaign_id,
               coalesce(sum(sms_count) FILTER (WHERE type = 'sms_send'), 0), -sum(amount)
          FROM billing_transactions
         WHERE type = 'sms_send' OR (type = 'refund' AND message_id IS NOT NULL)
         GROUP BY org_id, utc_day(created_at), campaign_id
        ON CONFLICT ON CONSTRAINT usage_daily_key DO UPDATE
            SET sms_count = u.sms_count + excluded.sms_count, amount = u.amount + excluded.amount;
    ALTER TABLE billing_transactions FORCE ROW LEVEL SECURITY;
    ALTER TABLE usage_daily FORCE ROW LEVEL SECURITY;
    DROP TABLE usage_daily_backfill_pending;
END
$$;
