-- Stripe hygiene (issue 14, item 5). Policies live in sql/functions/40_topups.sql; the
-- rules that use these columns in billing_gateway/topups/payments.py (docs/stripe.md,
-- "Exactly once").

-- Refunds one by one. A refund can fail or be canceled after its charge.refunded was seen
-- (https://docs.stripe.com/refunds#failed-refunds); the charge's amount_refunded then goes
-- down again, and its reversal must be given back, once. Refund objects
-- (refund.created/updated/failed, charge.refund.updated) are kept here by id with the
-- furthest status seen: failed and canceled are final, so a late `succeeded` of a failed
-- refund changes nothing. The status is Stripe's string, unchecked: a status Stripe adds
-- later must not make its event fail (it counts as a refund still standing).
CREATE TABLE stripe_refunds (
    id                 text PRIMARY KEY,
    payment_intent_id  text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    status             text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_stripe_refunds_payment ON stripe_refunds (payment_intent_id);

-- What refunded_minor held until now: the largest amount_refunded seen on charge.refunded.
-- refunded_minor becomes the refunded amount in effect, the larger of this minus the
-- refunds known to have failed or been canceled and the sum of the known refunds still
-- standing. A payment's reversed_minor is now net of what was given back.
ALTER TABLE stripe_payments
    ADD COLUMN charge_refunded_minor bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT stripe_payments_charge_refunded CHECK (charge_refunded_minor >= 0);
UPDATE stripe_payments SET charge_refunded_minor = refunded_minor;

ALTER TABLE stripe_refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_refunds FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON stripe_refunds TO billing_app;

-- A lost dispute's currency. Stripe disputes carry their own currency
-- (https://docs.stripe.com/api/disputes/object#dispute_object-currency); one in another
-- currency than its payment's is not taken back as if it were in the payment's, but kept
-- for a human: listed at GET /payments/shortfalls and by reconcile (exit 1) until an admin
-- marks it reviewed. Rows from before this migration (NULL) were applied in the payment's
-- currency and stay so.
ALTER TABLE stripe_disputes
    ADD COLUMN currency text,
    ADD COLUMN reviewed_at timestamptz,
    ADD COLUMN reviewed_by text;
CREATE INDEX idx_stripe_disputes_payment ON stripe_disputes (payment_intent_id);

GRANT UPDATE (reviewed_at, reviewed_by) ON stripe_disputes TO billing_app;

-- When a Checkout Session stops taking payments. The gateway asks for one hour
-- (billing_gateway/topups/stripe_client.py) instead of Stripe's 24; a stored answer to
-- /create-checkout is replayed only while its session can still be paid. NULL: made before
-- this migration, with Stripe's default of 24 hours after creation.
ALTER TABLE checkout_sessions ADD COLUMN expires_at timestamptz;
