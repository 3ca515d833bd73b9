-- Alerts and notifications: who may see what. Repeatable (see 10_platform.sql).

-- An org's alert settings are its own, like its ledger.
DROP POLICY IF EXISTS org_alerts_tenant ON org_alerts;
CREATE POLICY org_alerts_tenant ON org_alerts
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

-- The deployment's BILLING_LOW_BALANCE_DEFAULT: each process's pool sets it on its
-- connections (platform/db.py); 5.00, the contract's default, where none did.
CREATE OR REPLACE FUNCTION low_balance_default() RETURNS numeric
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(NULLIF(current_setting('billing.low_balance_default', true), '')::numeric,
                          5.00) $$;

-- An amount in an event's data: exact, as GET /transactions writes it (money_text).
CREATE OR REPLACE FUNCTION money_json(p_amount numeric) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT to_jsonb(money_text(p_amount)::numeric) $$;

-- Write one money event into the outbox, in the transaction of its change.
CREATE OR REPLACE FUNCTION write_money_event(
    p_org_id uuid, p_type text, p_ledger_seq bigint, p_data jsonb
) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox_events (org_id, type, ledger_seq, data)
    VALUES (p_org_id, p_type, p_ledger_seq, jsonb_build_object('orgId', p_org_id) || p_data);
    -- Wakes the workers at commit (and never, on rollback); they poll every second anyway.
    -- https://www.postgresql.org/docs/current/sql-notify.html
    PERFORM pg_notify('billing_outbox', '');
END
$$;

-- The threshold crossings of one balance change, decided on the org's row while the
-- change holds its lock: balance.low when it falls below the threshold (once: the state
-- becomes low), balance.depleted when it reaches zero (once per episode), and
-- balance.recovered when a credit brings it back to the threshold or above, which re-arms
-- both. A BEFORE trigger sets the state on the row being written, so the change costs no
-- second row version; its WHEN clause keeps PL/pgSQL out of the usual charge (state ok,
-- balance still at or above the threshold). NEW.transaction_count is the seq of the ledger
-- row just appended (the last one of a bulk charge).
CREATE OR REPLACE FUNCTION organizations_balance_events() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    v_threshold numeric := coalesce(NEW.alert_threshold, low_balance_default());
    v_data jsonb := jsonb_build_object('balance', money_json(NEW.sms_balance),
                                       'threshold', money_json(v_threshold));
BEGIN
    IF NEW.sms_balance < OLD.sms_balance THEN
        IF NEW.alert_state = 'ok' AND NEW.sms_balance < v_threshold THEN
            PERFORM write_money_event(NEW.id, 'balance.low', NEW.transaction_count, v_data);
            NEW.alert_state := 'low';
        END IF;
        IF NEW.alert_state <> 'depleted' AND NEW.sms_balance = 0 THEN
            PERFORM write_money_event(NEW.id, 'balance.depleted', NEW.transaction_count, v_data);
            NEW.alert_state := 'depleted';
        END IF;
    ELSIF NEW.alert_state <> 'ok' AND NEW.sms_balance >= v_threshold THEN
        PERFORM write_money_event(NEW.id, 'balance.recovered', NEW.transaction_count, v_data);
        NEW.alert_state := 'ok';
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER organizations_balance_events
    BEFORE UPDATE OF sms_balance ON organizations
    FOR EACH ROW
    WHEN ((NEW.sms_balance < OLD.sms_balance AND NEW.alert_state <> 'depleted'
           AND (NEW.sms_balance = 0
                OR (NEW.alert_state = 'ok'
                    AND NEW.sms_balance < coalesce(NEW.alert_threshold, low_balance_default()))))
          OR (NEW.sms_balance > OLD.sms_balance AND NEW.alert_state <> 'ok'))
    EXECUTE FUNCTION organizations_balance_events();

-- A charge refused for want of funds, for locked orgs: an auto top-up if one is due, and
-- balance.depleted, once per episode,
-- for each org already below its threshold. A charge refused while the balance is at or
-- above the threshold is only too large for it: no episode starts.
CREATE OR REPLACE FUNCTION note_refused_charges(p_org_ids uuid[]) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_threshold numeric;
BEGIN
    PERFORM auto_topup_after_refusal(p_org_ids);  -- sql/functions/70_autotopup.sql
    FOR v_org IN SELECT * FROM organizations
                  WHERE id = ANY (p_org_ids) AND alert_state <> 'depleted' ORDER BY id LOOP
        v_threshold := coalesce(v_org.alert_threshold, low_balance_default());
        CONTINUE WHEN v_org.sms_balance >= v_threshold;
        UPDATE organizations SET alert_state = 'depleted' WHERE id = v_org.id;
        PERFORM write_money_event(v_org.id, 'balance.depleted', NULL, jsonb_build_object(
            'balance', money_json(v_org.sms_balance), 'threshold', money_json(v_threshold),
            'chargeRefused', true));
    END LOOP;
END
$$;

-- After an org's threshold changed (its row locked): a balance now at or above the
-- threshold ends the episode with balance.recovered, so the next fall below it is a
-- crossing again. It names the org's latest ledger row, whose balance it carries.
CREATE OR REPLACE FUNCTION rearm_alerts(p_org_id uuid) RETURNS void
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_threshold numeric;
BEGIN
    SELECT * INTO STRICT v_org FROM organizations WHERE id = p_org_id;
    v_threshold := coalesce(v_org.alert_threshold, low_balance_default());
    IF v_org.alert_state <> 'ok' AND v_org.sms_balance >= v_threshold THEN
        UPDATE organizations SET alert_state = 'ok' WHERE id = p_org_id;
        PERFORM write_money_event(p_org_id, 'balance.recovered', v_org.transaction_count,
            jsonb_build_object('balance', money_json(v_org.sms_balance),
                               'threshold', money_json(v_threshold)));
    END IF;
END
$$;

-- Events are written by the tenant's own transaction (the org it charges or credits) and
-- read only by the worker and the admin API (scope 'notifications').
DROP POLICY IF EXISTS outbox_events_write ON outbox_events;
CREATE POLICY outbox_events_write ON outbox_events FOR INSERT
    WITH CHECK (org_id = billing_current_org()
                OR (SELECT billing_current_org_set()) ? org_id::text);

DROP POLICY IF EXISTS outbox_events_notifications ON outbox_events;
CREATE POLICY outbox_events_notifications ON outbox_events
    USING (billing_current_scope() = 'notifications')
    WITH CHECK (billing_current_scope() = 'notifications');

DROP POLICY IF EXISTS webhook_endpoints_notifications ON webhook_endpoints;
CREATE POLICY webhook_endpoints_notifications ON webhook_endpoints
    USING (billing_current_scope() = 'notifications')
    WITH CHECK (billing_current_scope() = 'notifications');

DROP POLICY IF EXISTS deliveries_notifications ON deliveries;
CREATE POLICY deliveries_notifications ON deliveries
    USING (billing_current_scope() = 'notifications')
    WITH CHECK (billing_current_scope() = 'notifications');

DROP POLICY IF EXISTS delivery_attempts_notifications ON delivery_attempts;
CREATE POLICY delivery_attempts_notifications ON delivery_attempts
    USING (billing_current_scope() = 'notifications')
    WITH CHECK (billing_current_scope() = 'notifications');

-- The worker reads who gets an org's billing emails.
DROP POLICY IF EXISTS org_alerts_notifications ON org_alerts;
CREATE POLICY org_alerts_notifications ON org_alerts FOR SELECT
    USING (billing_current_scope() = 'notifications');
