-- Per-org alert settings: the low-balance threshold (NULL: the deployment's
-- BILLING_LOW_BALANCE_DEFAULT) and who gets billing emails. Policies live in
-- sql/functions/60_notifications.sql.
CREATE TABLE org_alerts (
    org_id                 uuid PRIMARY KEY REFERENCES organizations (id),
    low_balance_threshold  numeric(18, 4),
    emails                 text[] NOT NULL DEFAULT '{}',
    updated_by             text NOT NULL,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT org_alerts_threshold_positive CHECK (
        low_balance_threshold > 0 AND low_balance_threshold <> 'NaN'),
    CONSTRAINT org_alerts_emails_bounded CHECK (cardinality(emails) <= 10)
);

ALTER TABLE org_alerts ENABLE ROW LEVEL SECURITY;
ALTER TABLE org_alerts FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON org_alerts TO billing_app;
