-- Who may see a portal link or session row. Repeatable (see 10_platform.sql).
--
-- A link or session is found by its token before anyone knows the org, so a tenant policy
-- cannot cover the lookup. Instead the row is visible to exactly the transaction that
-- presents its token: billing.portal_token holds the hash of the token the browser sent
-- (transaction-local, like billing.org_id). Knowing the token is the credential; no scope
-- can list other orgs' links or sessions.

CREATE OR REPLACE FUNCTION billing_portal_token() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('billing.portal_token', true), '') $$;

-- A link is created by the platform for one org (the tenant of the request).
DROP POLICY IF EXISTS portal_links_create ON portal_links;
CREATE POLICY portal_links_create ON portal_links FOR INSERT
    WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS portal_links_read ON portal_links;
CREATE POLICY portal_links_read ON portal_links FOR SELECT
    USING (token_hash = billing_portal_token() OR org_id = billing_current_org());

DROP POLICY IF EXISTS portal_links_redeem ON portal_links;
CREATE POLICY portal_links_redeem ON portal_links FOR UPDATE
    USING (token_hash = billing_portal_token()) WITH CHECK (token_hash = billing_portal_token());

-- A session is opened for the org its link named (the tenant, set from the redeemed link).
DROP POLICY IF EXISTS portal_sessions_open ON portal_sessions;
CREATE POLICY portal_sessions_open ON portal_sessions FOR INSERT
    WITH CHECK (org_id = billing_current_org());

DROP POLICY IF EXISTS portal_sessions_read ON portal_sessions;
CREATE POLICY portal_sessions_read ON portal_sessions FOR SELECT
    USING (session_hash = billing_portal_token() OR org_id = billing_current_org());

DROP POLICY IF EXISTS portal_sessions_touch ON portal_sessions;
CREATE POLICY portal_sessions_touch ON portal_sessions FOR UPDATE
    USING (session_hash = billing_portal_token())
    WITH CHECK (session_hash = billing_portal_token());
