-- Top-ups through Stripe: reversals of refunded or disputed credits, and the policies of
-- Stripe's tables.
--
-- Repeatable: applied after the numbered migrations whenever this file changes
-- (billing_gateway/platform/migrations.py). Each function and policy is defined here and
-- nowhere else; a change of a function's arguments or result type needs a numbered
-- migration that drops the old one first.

CREATE OR REPLACE FUNCTION reverse_credits(
    p_org_id uuid, p_amount numeric, p_payment_intent_id text,
    p_description text DEFAULT NULL, p_created_by text DEFAULT NULL,
    p_metadata jsonb DEFAULT NULL
) RETURNS reversal_result
    LANGUAGE plpgsql AS $$
DECLARE
    v_org organizations;
    v_taken numeric;
    v_row ledger_result;
BEGIN
    PERFORM require_amount(p_amount, 'reversal');
    v_org := lock_organization(p_org_id);
    v_taken := least(v_org.sms_balance, p_amount);
    IF v_taken <= 0 THEN
        RETURN (NULL::uuid, v_org.sms_balance, 0::numeric);
    END IF;
    -- Before the row, so it comes before any balance.low or balance.depleted it causes.
    PERFORM write_money_event(p_org_id, 'topup.reversed', v_org.transaction_count + 1,
        jsonb_build_object('balance', money_json(v_org.sms_balance - v_taken),
                           'amount', money_json(v_taken), 'requested', money_json(p_amount),
                           'paymentIntentId', p_payment_intent_id,
                           'reason', coalesce(p_metadata ->> 'reason', 'refund')));
    -- Tells the auto top-up trigger that this fall is no charge (70_autotopup.sql).
    PERFORM set_config('billing.balance_change', 'reversal', true);
    v_row := append_ledger_row(
        v_org, 'reversal', -v_taken, NULL, NULL, 'stripe', p_payment_intent_id, NULL, NULL,
        p_description,
        coalesce(p_metadata, '{}'::jsonb)
            || jsonb_build_object('requested', p_amount, 'shortfall', p_amount - v_taken),
        p_created_by);
    PERFORM set_config('billing.balance_change', '', true);
    RETURN (v_row.transaction_id, v_row.balance, v_taken);
END
$$;

DROP POLICY IF EXISTS checkout_sessions_tenant ON checkout_sessions;
CREATE POLICY checkout_sessions_tenant ON checkout_sessions
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS stripe_events_scope ON stripe_events;
CREATE POLICY stripe_events_scope ON stripe_events
    USING (billing_current_scope() = 'stripe') WITH CHECK (billing_current_scope() = 'stripe');

DROP POLICY IF EXISTS stripe_payments_scope ON stripe_payments;
CREATE POLICY stripe_payments_scope ON stripe_payments
    USING (billing_current_scope() = 'stripe') WITH CHECK (billing_current_scope() = 'stripe');

DROP POLICY IF EXISTS stripe_disputes_scope ON stripe_disputes;
CREATE POLICY stripe_disputes_scope ON stripe_disputes
    USING (billing_current_scope() = 'stripe') WITH CHECK (billing_current_scope() = 'stripe');

DROP POLICY IF EXISTS stripe_refunds_scope ON stripe_refunds;
CREATE POLICY stripe_refunds_scope ON stripe_refunds
    USING (billing_current_scope() = 'stripe') WITH CHECK (billing_current_scope() = 'stripe');

DROP POLICY IF EXISTS checkout_requests_tenant ON checkout_requests;
CREATE POLICY checkout_requests_tenant ON checkout_requests
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS checkout_requests_reconcile_read ON checkout_requests;
CREATE POLICY checkout_requests_reconcile_read ON checkout_requests FOR SELECT
    USING (billing_current_scope() = 'stripe');

DROP POLICY IF EXISTS checkout_requests_reconcile_abandon ON checkout_requests;
CREATE POLICY checkout_requests_reconcile_abandon ON checkout_requests FOR UPDATE
    USING (billing_current_scope() = 'stripe')
    WITH CHECK (billing_current_scope() = 'stripe' AND status = 'abandoned');

-- An org's Stripe Customer is its own; the webhook path reads it in the 'stripe' scope.
DROP POLICY IF EXISTS stripe_customers_tenant ON stripe_customers;
CREATE POLICY stripe_customers_tenant ON stripe_customers
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());
