-- One Stripe Customer per org, for saved cards and off-session top-ups. Created once: the
-- Stripe call carries an idempotency key derived from the org, and the first row written
-- wins (billing_gateway/topups/customers.py). Policies in sql/functions/40_topups.sql.
CREATE TABLE stripe_customers (
    org_id       uuid PRIMARY KEY REFERENCES organizations (id),
    customer_id  text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE stripe_customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_customers FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT ON stripe_customers TO billing_app;
