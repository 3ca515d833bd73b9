-- SMS usage at campaign scale: bulk charges across many orgs in one statement, and usage
-- refunds (an undelivered message's charge given back, once).
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).

-- A bulk request spans orgs, so its idempotency record belongs to no single org: the key
-- then carries no org, and only a request without a tenant may write such a record.
ALTER TABLE idempotency_keys ALTER COLUMN org_id DROP NOT NULL;

-- One usage refund per charged message.
CREATE UNIQUE INDEX idx_billing_transactions_message_refund
    ON billing_transactions (org_id, message_id)
    WHERE type = 'refund' AND message_id IS NOT NULL;

-- What one item of a bulk charge did. item is its 1-based position in the request.
CREATE TYPE bulk_charge_result AS (
    item integer, transaction_id uuid, balance numeric, outcome text
);

