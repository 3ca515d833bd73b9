-- One statement per hot request. A request used to be BEGIN, set_config, the query and
-- COMMIT: four statements and four round trips. These functions take the tenant and the
-- caller as arguments, set them transaction-locally (the statement's own transaction in
-- autocommit) before doing the work, so row level security binds exactly as before and
-- the request costs one statement. Requests with an Idempotency-Key keep the explicit
-- transaction (the key, the effect and the stored answer commit together).

CREATE TYPE account_view AS (balance numeric, sms_price numeric);

-- GET /balance.
CREATE FUNCTION api_account(p_org_id uuid, p_caller text) RETURNS account_view
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

CREATE TYPE charge_result AS (
    transaction_id uuid, balance numeric, outcome text, price numeric, amount numeric
);

-- POST /deduct: the price is the request's, else the org's, else p_default_price; a cost
-- above 1,000,000,000 is refused (outcome too_large) before anything is written.
CREATE FUNCTION api_deduct(
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
    v := deduct_credits(p_org_id, v_amount, p_sms_count, v_price, p_message_id,
                        p_campaign_id, coalesce(p_description, 'Sent ' || p_sms_count || ' SMS'),
                        p_caller, NULL);
    RETURN (v.transaction_id, v.balance, v.outcome, v_price, v_amount);
END
$$;
