-- Money events for the platform (outbound webhooks, emails): the transactional outbox.
-- Every row is written by the ledger's own SQL in the transaction of the change that
-- causes it (sql/functions/60_notifications.sql), so an event exists if and only if its
-- change committed. The worker (billing_gateway/notifications/worker.py) fans each event
-- out to deliveries and marks it dispatched.

-- The threshold crossings are decided under the org's row lock, on the org's row itself:
-- alert_threshold copies org_alerts.low_balance_threshold (NULL: the deployment default)
-- so a balance change reads no other table, and alert_state is where the org stands in the
-- current episode: ok, low (balance.low sent) or depleted (balance.depleted sent). Adding
-- a column with a constant default rewrites nothing (PostgreSQL 11+).
ALTER TABLE organizations
    ADD COLUMN alert_threshold numeric(18, 4),
    ADD COLUMN alert_state text NOT NULL DEFAULT 'ok',
    ADD CONSTRAINT organizations_alert_state CHECK (alert_state IN ('ok', 'low', 'depleted'));

UPDATE organizations o SET alert_threshold = a.low_balance_threshold
  FROM org_alerts a WHERE a.org_id = o.id;

CREATE TABLE outbox_events (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Order of writing, for the worker to take events oldest first.
    seq            bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    org_id         uuid NOT NULL REFERENCES organizations (id),
    type           text NOT NULL,
    -- The org's ledger row (billing_transactions.seq) whose change caused the event;
    -- NULL only for balance.depleted after a refused charge, which changes no balance.
    ledger_seq     bigint,
    data           jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    dispatched_at  timestamptz,
    CONSTRAINT outbox_events_type CHECK (type IN (
        'balance.low', 'balance.depleted', 'balance.recovered', 'topup.succeeded',
        'topup.reversed', 'auto_topup.succeeded', 'auto_topup.failed')),
    CONSTRAINT outbox_events_ledger_seq CHECK (ledger_seq IS NOT NULL OR type = 'balance.depleted')
);
CREATE INDEX outbox_events_pending ON outbox_events (seq) WHERE dispatched_at IS NULL;
CREATE INDEX outbox_events_org ON outbox_events (org_id, seq);
CREATE INDEX outbox_events_ledger_row ON outbox_events (org_id, ledger_seq);

-- When events began: verify-ledger expects a top-up event for every ledger row after it.
CREATE TABLE outbox_start (started_at timestamptz NOT NULL);
INSERT INTO outbox_start VALUES (now());
-- Read only by verify-ledger (a superuser); the app role is granted nothing on it.
ALTER TABLE outbox_start ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_start FORCE ROW LEVEL SECURITY;

-- Platform-wide receivers of events (admin API). The secret signs every delivery, so it is
-- kept, readable only by the notifications scope; the API shows it once, at creation.
CREATE TABLE webhook_endpoints (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url             text NOT NULL,
    events          text[] NOT NULL,
    description     text,
    secret          text NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- When the current run of failures began (NULL: the last attempt succeeded).
    failing_since   timestamptz,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz
);

-- One event to one receiver: a webhook endpoint, or the org's billing emails.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id        uuid NOT NULL REFERENCES outbox_events (id),
    endpoint_id     uuid REFERENCES webhook_endpoints (id),
    emails          text[],
    status          text NOT NULL DEFAULT 'pending',
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    last_response_ms integer,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT deliveries_status CHECK (status IN ('pending', 'delivered', 'failed')),
    CONSTRAINT deliveries_one_receiver CHECK ((endpoint_id IS NULL) <> (emails IS NULL)),
    CONSTRAINT deliveries_once UNIQUE (event_id, endpoint_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_endpoint ON deliveries (endpoint_id, created_at DESC);

-- Every attempt of a delivery: the delivery log.
CREATE TABLE delivery_attempts (
    delivery_id  uuid NOT NULL REFERENCES deliveries (id),
    attempt      integer NOT NULL,
    attempted_at timestamptz NOT NULL,
    status_code  integer,
    error        text,
    response_ms  integer NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

ALTER TABLE outbox_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE outbox_events FORCE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
ALTER TABLE deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE deliveries FORCE ROW LEVEL SECURITY;
ALTER TABLE delivery_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE delivery_attempts FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON outbox_events, webhook_endpoints, deliveries TO billing_app;
GRANT SELECT, INSERT ON delivery_attempts TO billing_app;
