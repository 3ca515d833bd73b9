-- Auto top-up: deciding an attempt under the org's row lock, ending it, and the policies
-- of saved cards and attempts. Repeatable (see 10_platform.sql). docs/autotopup.md.

-- How long after a failed attempt the next may start: a declined card is not retried at
-- once (each charge below the threshold would otherwise try it again within seconds), and
-- the customer has had the auto_topup.failed email in between.
CREATE OR REPLACE FUNCTION auto_topup_retry_delay() RETURNS interval
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT interval '1 hour' $$;

-- Consecutive failures after which auto top-up pauses until the customer acts.
CREATE OR REPLACE FUNCTION auto_topup_failures_to_pause() RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3 $$;

-- Start an attempt for an org (its row locked by the caller) whose balance is below its
-- auto top-up threshold, if none is in flight: the attempt brings the balance back to the
-- target (recharge-to), charged to the saved card by the worker. Returns its id, or NULL.
-- The attempt's amount counts toward the balance while it is in flight: no other starts
-- until it ends, however many charges follow.
CREATE OR REPLACE FUNCTION start_auto_topup(p_org organizations, p_ledger_seq bigint)
    RETURNS uuid
    LANGUAGE plpgsql AS $$
DECLARE
    v_card saved_cards;
    v_id uuid;
BEGIN
    IF p_org.auto_topup_state <> 'on' OR p_org.auto_topup_attempt IS NOT NULL
       OR NOT p_org.sms_balance < p_org.auto_topup_threshold
       OR p_org.auto_topup_not_before > now() THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_card FROM saved_cards WHERE org_id = p_org.id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO auto_topup_attempts (org_id, amount, balance_at_trigger, threshold, target,
                                     ledger_seq, customer_id, payment_method_id)
    VALUES (p_org.id, p_org.auto_topup_target - p_org.sms_balance, p_org.sms_balance,
            p_org.auto_topup_threshold, p_org.auto_topup_target, p_ledger_seq,
            v_card.customer_id, v_card.payment_method_id)
    RETURNING id INTO v_id;
    PERFORM pg_notify('billing_outbox', '');  -- wakes the worker at commit
    RETURN v_id;
END
$$;

-- A charge took the balance below the auto top-up threshold: decided on the org's row
-- while the charge holds its lock, in the charge's transaction (an attempt exists if and
-- only if the charge committed). The WHEN clause keeps PL/pgSQL off every other balance
-- change. A reversal (refund, lost dispute) starts none: charging the card again at once
-- for credits just taken back for a refund or a chargeback is not what its owner asked.
CREATE OR REPLACE FUNCTION organizations_auto_topup() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('billing.balance_change', true) IS DISTINCT FROM 'reversal' THEN
        NEW.auto_topup_attempt := start_auto_topup(NEW, NEW.transaction_count);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER organizations_auto_topup
    BEFORE UPDATE OF sms_balance ON organizations
    FOR EACH ROW
    WHEN (NEW.sms_balance < OLD.sms_balance AND NEW.auto_topup_state = 'on'
          AND NEW.auto_topup_attempt IS NULL AND NEW.sms_balance < NEW.auto_topup_threshold)
    EXECUTE FUNCTION organizations_auto_topup();

-- Charges refused for want of funds (called by note_refused_charges, the orgs' rows
-- locked): a refusal changes no balance, so the trigger never sees it, yet an org whose
-- last attempt failed has to try again once the delay is over, or its SMS stay stopped.
CREATE OR REPLACE FUNCTION auto_topup_after_refusal(p_org_ids uuid[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_id uuid;
BEGIN
    FOR v_org IN SELECT * FROM organizations
                  WHERE id = ANY (p_org_ids) AND auto_topup_state = 'on'
                    AND auto_topup_attempt IS NULL ORDER BY id LOOP
        v_id := start_auto_topup(v_org, NULL);
        IF v_id IS NOT NULL THEN
            UPDATE organizations SET auto_topup_attempt = v_id WHERE id = v_org.id;
        END IF;
    END LOOP;
END
$$;

-- Set an org's auto top-up (its row locked here). Turning it on, or re-enabling it after a
-- pause, clears the failures; turned on below the threshold, it starts an attempt at once.
-- Returns the org's row as it now is.
CREATE OR REPLACE FUNCTION set_auto_topup(
    p_org_id uuid, p_enabled boolean, p_threshold numeric, p_target numeric
) RETURNS organizations
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations := lock_organization(p_org_id);
    v_id uuid;
BEGIN
    UPDATE organizations
       SET auto_topup_state = CASE WHEN p_enabled THEN 'on' ELSE 'off' END,
           auto_topup_threshold = coalesce(p_threshold, auto_topup_threshold),
           auto_topup_target = coalesce(p_target, auto_topup_target),
           auto_topup_failures = CASE WHEN p_enabled AND auto_topup_state <> 'on' THEN 0
                                      ELSE auto_topup_failures END,
           auto_topup_not_before = CASE WHEN p_enabled AND auto_topup_state <> 'on' THEN NULL
                                        ELSE auto_topup_not_before END,
           updated_at = now()
     WHERE id = p_org_id
    RETURNING * INTO v_org;
    v_id := start_auto_topup(v_org, NULL);
    IF v_id IS NOT NULL THEN
        UPDATE organizations SET auto_topup_attempt = v_id WHERE id = p_org_id
        RETURNING * INTO v_org;
    END IF;
    RETURN v_org;
END
$$;

-- End an attempt in flight: 'succeeded' (its credit has just landed through the webhook
-- path, in this transaction) or 'failed'; or 'canceled' before Stripe was asked. Writes
-- auto_topup.succeeded or auto_topup.failed; the third failure in a row pauses auto
-- top-up. The attempt's row is locked before the org's, the order the worker takes them
-- in (it holds the attempt while Stripe answers), so the two never deadlock. Returns the
-- attempt's status, or 'already_<status>' when it had ended so before (a success may
-- still end an attempt recorded as failed: Stripe took the payment after all, and the
-- money is in).
CREATE OR REPLACE FUNCTION finish_auto_topup(
    p_attempt_id uuid, p_status text, p_payment_intent_id text DEFAULT NULL,
    p_failure_code text DEFAULT NULL, p_decline_code text DEFAULT NULL,
    p_failure_message text DEFAULT NULL
) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    v_attempt auto_topup_attempts;
    v_org organizations;
    v_credit billing_transactions;
    v_failures integer;
    v_paused boolean;
BEGIN
    SELECT * INTO v_attempt FROM auto_topup_attempts WHERE id = p_attempt_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'unknown_attempt';
    END IF;
    IF v_attempt.status IN ('succeeded', 'canceled')
       OR (v_attempt.status = 'failed' AND p_status <> 'succeeded') THEN
        RETURN 'already_' || v_attempt.status;
    END IF;
    v_org := lock_organization(v_attempt.org_id);
    IF p_status = 'succeeded' THEN
        SELECT * INTO STRICT v_credit FROM billing_transactions
         WHERE org_id = v_org.id AND payment_intent_id = p_payment_intent_id
           AND type = 'purchase';
    END IF;
    UPDATE auto_topup_attempts
       SET status = p_status,
           -- What was charged and credited (the worker rounds up to the currency's minor
           -- unit, and its record of that may have died with it).
           amount = coalesce(v_credit.amount, amount),
           payment_intent_id = coalesce(p_payment_intent_id, payment_intent_id),
           failure_code = CASE WHEN p_status = 'failed' THEN p_failure_code END,
           decline_code = CASE WHEN p_status = 'failed' THEN p_decline_code END,
           failure_message = CASE WHEN p_status = 'failed' THEN p_failure_message END,
           finished_at = now(), updated_at = now()
     WHERE id = p_attempt_id;
    UPDATE organizations SET auto_topup_attempt = NULL
     WHERE id = v_org.id AND auto_topup_attempt = p_attempt_id;
    IF p_status = 'canceled' THEN
        RETURN p_status;
    END IF;
    IF p_status = 'succeeded' THEN
        UPDATE organizations SET auto_topup_failures = 0, auto_topup_not_before = NULL
         WHERE id = v_org.id;
        PERFORM write_money_event(v_org.id, 'auto_topup.succeeded', v_credit.seq,
            jsonb_build_object('balance', money_json(v_org.sms_balance),
                               'amount', money_json(v_credit.amount),
                               'attemptId', p_attempt_id,
                               'paymentIntentId', p_payment_intent_id));
        RETURN p_status;
    END IF;
    v_failures := v_org.auto_topup_failures + 1;
    v_paused := v_org.auto_topup_state = 'on' AND v_failures >= auto_topup_failures_to_pause();
    UPDATE organizations
       SET auto_topup_failures = v_failures,
           auto_topup_not_before = now() + auto_topup_retry_delay(),
           auto_topup_state = CASE WHEN v_paused THEN 'paused' ELSE auto_topup_state END
     WHERE id = v_org.id;
    PERFORM write_money_event(v_org.id, 'auto_topup.failed', NULL,
        jsonb_build_object('balance', money_json(v_org.sms_balance),
                           'amount', money_json(v_attempt.amount),
                           'attemptId', p_attempt_id,
                           'paymentIntentId', coalesce(p_payment_intent_id,
                                                       v_attempt.payment_intent_id),
                           'code', p_failure_code, 'declineCode', p_decline_code,
                           'message', p_failure_message,
                           -- what the alert email shows (notifications/emails.py)
                           'reason', coalesce(p_failure_message, p_failure_code),
                           'consecutiveFailures', v_failures,
                           'paused', v_paused OR v_org.auto_topup_state = 'paused'));
    RETURN p_status;
END
$$;

-- A card saved by a Checkout payment (the webhook path, the org's row locked): kept if it
-- is newer than the one on file. A new card is the customer acting: it clears the
-- failures and resumes a paused auto top-up. Returns true when the card was kept.
CREATE OR REPLACE FUNCTION save_card(
    p_org_id uuid, p_customer_id text, p_payment_method_id text, p_brand text, p_last4 text,
    p_exp_month integer, p_exp_year integer, p_payment_intent_id text, p_saved_at timestamptz
) RETURNS boolean
    LANGUAGE plpgsql AS $$
DECLARE
    v_kept boolean;
BEGIN
    PERFORM lock_organization(p_org_id);
    INSERT INTO saved_cards AS c (org_id, customer_id, payment_method_id, brand, last4,
                                  exp_month, exp_year, payment_intent_id, saved_at)
    VALUES (p_org_id, p_customer_id, p_payment_method_id, p_brand, p_last4, p_exp_month,
            p_exp_year, p_payment_intent_id, p_saved_at)
    ON CONFLICT (org_id) DO UPDATE
        SET customer_id = excluded.customer_id, payment_method_id = excluded.payment_method_id,
            brand = excluded.brand, last4 = excluded.last4, exp_month = excluded.exp_month,
            exp_year = excluded.exp_year, payment_intent_id = excluded.payment_intent_id,
            saved_at = excluded.saved_at, recorded_at = now()
        WHERE c.saved_at < excluded.saved_at
    RETURNING true INTO v_kept;
    IF v_kept THEN
        UPDATE organizations
           SET auto_topup_failures = 0, auto_topup_not_before = NULL,
               auto_topup_state = CASE WHEN auto_topup_state = 'paused' THEN 'on'
                                       ELSE auto_topup_state END
         WHERE id = p_org_id;
    END IF;
    RETURN coalesce(v_kept, false);
END
$$;

-- An org's card and attempts are its own; the worker finds due attempts in the 'autotopup'
-- scope, then works in the attempt's org.
DROP POLICY IF EXISTS saved_cards_tenant ON saved_cards;
CREATE POLICY saved_cards_tenant ON saved_cards
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

-- A bulk charge across orgs runs in their tenant set; its trigger reads each org's card.
DROP POLICY IF EXISTS saved_cards_tenant_set ON saved_cards;
CREATE POLICY saved_cards_tenant_set ON saved_cards FOR SELECT
    USING ((SELECT billing_current_org_set()) ? org_id::text);

DROP POLICY IF EXISTS auto_topup_attempts_tenant ON auto_topup_attempts;
CREATE POLICY auto_topup_attempts_tenant ON auto_topup_attempts
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS auto_topup_attempts_tenant_set ON auto_topup_attempts;
CREATE POLICY auto_topup_attempts_tenant_set ON auto_topup_attempts
    USING ((SELECT billing_current_org_set()) ? org_id::text)
    WITH CHECK ((SELECT billing_current_org_set()) ? org_id::text);

DROP POLICY IF EXISTS auto_topup_attempts_worker ON auto_topup_attempts;
CREATE POLICY auto_topup_attempts_worker ON auto_topup_attempts
    USING (billing_current_scope() = 'autotopup')
    WITH CHECK (billing_current_scope() = 'autotopup');
