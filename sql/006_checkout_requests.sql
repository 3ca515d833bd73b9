-- A top-up is asked of Stripe in three steps, none of which holds a database transaction
-- (or a pooled connection) while Stripe is waited on: record the request, call Stripe,
-- record the session. A crash between the steps leaves a 'pending' request: a retry with
-- the same Idempotency-Key sends the same Stripe idempotency key (Stripe answers with the
-- same session) and settles it; `billing-gateway reconcile` finds the session at Stripe by
-- the request's key in its metadata, or marks a request Stripe never saw 'abandoned'.
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).
CREATE TABLE checkout_requests (
    -- The Stripe idempotency key of the call: derived from the caller's Idempotency-Key
    -- (so a retry finds its request), else fresh per request.
    stripe_idempotency_key  text PRIMARY KEY,
    org_id                  uuid NOT NULL REFERENCES organizations (id),
    amount                  numeric(18, 4) NOT NULL,
    currency                text NOT NULL,
    created_by              text NOT NULL,
    status                  text NOT NULL DEFAULT 'pending',
    session_id              text REFERENCES checkout_sessions (id),
    error                   text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT checkout_requests_amount_positive CHECK (amount > 0 AND amount <> 'NaN'),
    CONSTRAINT checkout_requests_status CHECK (
        status IN ('pending', 'created', 'failed', 'abandoned')),
    CONSTRAINT checkout_requests_created_has_session CHECK (
        (status = 'created') = (session_id IS NOT NULL))
);
CREATE INDEX idx_checkout_requests_pending ON checkout_requests (created_at)
    WHERE status = 'pending';

-- Owned by its org, as checkout_sessions. Reconciliation (the 'stripe' scope) reads every
-- org's requests and may only mark one abandoned; recording a session it does as the org
-- (enter_org), like any request.
ALTER TABLE checkout_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE checkout_requests FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON checkout_requests TO billing_app;
