-- Stripe top-ups: Checkout sessions we created, every webhook event once, and each
-- payment's state (credited, refunded, disputed, reversed), so that any order of events
-- for one payment ends in the same balance.
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).

-- A Checkout Session created by POST /create-checkout. Owned by its org.
CREATE TABLE checkout_sessions (
    id                 text PRIMARY KEY,
    org_id             uuid NOT NULL REFERENCES organizations (id),
    amount             numeric(18, 4) NOT NULL,
    currency           text NOT NULL,
    status             text NOT NULL DEFAULT 'open',
    payment_status     text,
    payment_intent_id  text,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkout_sessions_amount_positive CHECK (amount > 0 AND amount <> 'NaN'),
    CONSTRAINT checkout_sessions_status CHECK (
        status IN ('open', 'complete', 'expired', 'payment_failed'))
);
CREATE INDEX idx_checkout_sessions_org ON checkout_sessions (org_id, created_at);

-- Every verified webhook event, stored once (the event id is the key) with what its
-- processing did. processed_at is set in the same transaction as the ledger effect; an
-- event whose processing failed is kept with processed_at NULL and its error, for Stripe's
-- retry or `billing-gateway reconcile` to process again.
CREATE TABLE stripe_events (
    id                 text PRIMARY KEY,
    type               text NOT NULL,
    payload            jsonb NOT NULL,
    payment_intent_id  text,
    org_id             uuid,
    received_at        timestamptz NOT NULL DEFAULT now(),
    processed_at       timestamptz,
    attempts           integer NOT NULL DEFAULT 1,
    outcome            text,
    error              text
);
CREATE INDEX idx_stripe_events_unprocessed ON stripe_events (received_at)
    WHERE processed_at IS NULL;
CREATE INDEX idx_stripe_events_payment ON stripe_events (payment_intent_id);

-- One row per PaymentIntent the gateway has heard of. Amounts in the currency's minor
-- units, as Stripe sends them. credited_minor is the purchase credit (NULL: not credited);
-- refunded_minor the largest cumulative amount_refunded seen (events may come out of
-- order, and it only grows); disputed_minor the sum of lost disputes; reversed_minor how
-- much of refunds and disputes has been taken back (including any shortfall, which is
-- what the balance could not cover). The ledger effect owed at any time is
-- least(credited, refunded + disputed) - reversed, whatever order the events came in.
CREATE TABLE stripe_payments (
    payment_intent_id  text PRIMARY KEY,
    org_id             uuid REFERENCES organizations (id),
    currency           text,
    credited_minor     bigint,
    refunded_minor     bigint NOT NULL DEFAULT 0,
    disputed_minor     bigint NOT NULL DEFAULT 0,
    reversed_minor     bigint NOT NULL DEFAULT 0,
    shortfall          numeric(18, 4) NOT NULL DEFAULT 0,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stripe_payments_amounts CHECK (
        credited_minor > 0 AND refunded_minor >= 0 AND disputed_minor >= 0
        AND reversed_minor >= 0 AND shortfall >= 0),
    CONSTRAINT stripe_payments_reversal_bounded CHECK (reversed_minor <= credited_minor)
);
CREATE INDEX idx_stripe_payments_shortfall ON stripe_payments (org_id) WHERE shortfall > 0;

-- Lost disputes, once each (a dispute's amount is taken back once, however often its
-- closing is delivered).
CREATE TABLE stripe_disputes (
    id                 text PRIMARY KEY,
    payment_intent_id  text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    created_at         timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE checkout_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkout_sessions FORCE ROW LEVEL SECURITY;

-- Stripe's own records belong to no single tenant: only the 'stripe' scope sees them.
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events FORCE ROW LEVEL SECURITY;

ALTER TABLE stripe_payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_payments FORCE ROW LEVEL SECURITY;

ALTER TABLE stripe_disputes ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_disputes FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON checkout_sessions, stripe_events, stripe_payments TO billing_app;
GRANT SELECT, INSERT ON stripe_disputes TO billing_app;

-- Take credits back for a refunded or disputed purchase, never below zero: take what the
-- balance holds (up to p_amount) as a 'reversal', and return how much was taken. The part
-- not covered (the shortfall) goes into the row's metadata; with nothing to take, no row
-- is written and the caller records the shortfall.
CREATE TYPE reversal_result AS (transaction_id uuid, balance numeric, taken numeric);

