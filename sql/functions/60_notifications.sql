-- Alerts and notifications: who may see what. Repeatable (see 10_platform.sql).

-- An org's alert settings are its own, like its ledger.
DROP POLICY IF EXISTS org_alerts_tenant ON org_alerts;
CREATE POLICY org_alerts_tenant ON org_alerts
    USING (org_id = billing_current_org()) WITH CHECK (org_id = billing_current_org());
