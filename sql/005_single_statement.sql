-- One statement per hot request. A request used to be BEGIN, set_config, the query and
-- COMMIT: four statements and four round trips. These functions take the tenant and the
-- caller as arguments, set them transaction-locally (the statement's own transaction in
-- autocommit) before doing the work, so row level security binds exactly as before and
-- the request costs one statement. Requests with an Idempotency-Key keep the explicit
-- transaction (the key, the effect and the stored answer commit together).
-- Functions, policies and triggers live in sql/functions/ (one repeatable file per domain).

CREATE TYPE account_view AS (balance numeric, sms_price numeric);

CREATE TYPE charge_result AS (
    transaction_id uuid, balance numeric, outcome text, price numeric, amount numeric
);

