-- Saved cards and auto top-up (CONTRACT.md, "Saved cards and auto top-up"). Functions and
-- policies in sql/functions/70_autotopup.sql; docs/autotopup.md tells the whole story.

-- The org's auto top-up, on its own row like its alert threshold, so the charge that takes
-- the balance below the threshold decides the attempt under the row lock it already holds
-- and reads no other table in the usual case. State: off, on, or paused (after repeated
-- failures, until the customer acts). auto_topup_attempt is the attempt in flight (NULL
-- when none): at most one per org, and while it is in flight no charge starts another.
ALTER TABLE organizations
    ADD COLUMN auto_topup_state text NOT NULL DEFAULT 'off',
    ADD COLUMN auto_topup_threshold numeric(18, 4),
    ADD COLUMN auto_topup_target numeric(18, 4),
    ADD COLUMN auto_topup_attempt uuid,
    ADD COLUMN auto_topup_failures integer NOT NULL DEFAULT 0,
    ADD COLUMN auto_topup_not_before timestamptz,
    ADD CONSTRAINT organizations_auto_topup_state
        CHECK (auto_topup_state IN ('off', 'on', 'paused')),
    ADD CONSTRAINT organizations_auto_topup_amounts
        CHECK (auto_topup_state = 'off'
               OR (auto_topup_threshold >= 0 AND auto_topup_target > auto_topup_threshold));

-- The org's card for off-session top-ups: the payment method a Checkout payment saved to
-- the org's Stripe Customer (a newer one replaces it; saved_at is when Stripe created the
-- PaymentIntent that saved it, so an older event arriving late changes nothing).
CREATE TABLE saved_cards (
    org_id             uuid PRIMARY KEY REFERENCES organizations (id),
    customer_id        text NOT NULL,
    payment_method_id  text NOT NULL,
    brand              text NOT NULL,
    last4              text NOT NULL,
    exp_month          integer NOT NULL,
    exp_year           integer NOT NULL,
    payment_intent_id  text NOT NULL,
    saved_at           timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);

-- One off-session top-up: its id is the Stripe idempotency key of its PaymentIntent.
-- pending: the worker is to create the PaymentIntent (tries, next_try_at for Stripe's 5xx
-- and timeouts); submitted: Stripe took it, the webhook will say; succeeded: credited
-- through the webhook path; failed: declined, authentication required, rejected, or
-- Stripe unreachable after the last try; canceled: auto top-up was turned off or the card
-- removed before the worker sent it (nothing was asked of Stripe).
CREATE TABLE auto_topup_attempts (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id             uuid NOT NULL REFERENCES organizations (id),
    status             text NOT NULL DEFAULT 'pending',
    amount             numeric(18, 4) NOT NULL,
    balance_at_trigger numeric(18, 4) NOT NULL,
    threshold          numeric(18, 4) NOT NULL,
    target             numeric(18, 4) NOT NULL,
    -- The charge that took the balance below the threshold (NULL: a refused charge, or
    -- auto top-up turned on below it).
    ledger_seq         bigint,
    customer_id        text NOT NULL,
    payment_method_id  text NOT NULL,
    tries              integer NOT NULL DEFAULT 0,
    next_try_at        timestamptz NOT NULL DEFAULT now(),
    payment_intent_id  text UNIQUE,
    failure_code       text,
    decline_code       text,
    failure_message    text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz,
    CONSTRAINT auto_topup_attempts_status
        CHECK (status IN ('pending', 'submitted', 'succeeded', 'failed', 'canceled')),
    CONSTRAINT auto_topup_attempts_amount CHECK (amount > 0)
);
-- The database's own guard for "never two attempts in flight for one org".
CREATE UNIQUE INDEX auto_topup_attempts_in_flight ON auto_topup_attempts (org_id)
    WHERE status IN ('pending', 'submitted');
CREATE INDEX auto_topup_attempts_due ON auto_topup_attempts (next_try_at)
    WHERE status = 'pending';
CREATE INDEX auto_topup_attempts_org ON auto_topup_attempts (org_id, created_at DESC);

-- auto_topup.failed changes no balance, like balance.depleted after a refused charge.
ALTER TABLE outbox_events DROP CONSTRAINT outbox_events_ledger_seq,
    ADD CONSTRAINT outbox_events_ledger_seq
        CHECK (ledger_seq IS NOT NULL OR type IN ('balance.depleted', 'auto_topup.failed'));

ALTER TABLE saved_cards ENABLE ROW LEVEL SECURITY;
ALTER TABLE saved_cards FORCE ROW LEVEL SECURITY;
ALTER TABLE auto_topup_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE auto_topup_attempts FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE, DELETE ON saved_cards TO billing_app;
GRANT SELECT, INSERT, UPDATE ON auto_topup_attempts TO billing_app;

-- A Customer Stripe no longer has (deleted, or the deployment moved to other keys) is
-- replaced by a new one (billing_gateway/topups/customers.py).
GRANT UPDATE ON stripe_customers TO billing_app;
