-- The customer billing page: one-time links that the platform's dashboard asks for, and
-- the browser sessions they open. Only hashes are stored: a stolen database dump holds no
-- link or cookie that works (as with passwords, SHA-256 is enough for 256-bit random
-- tokens: there is nothing to guess). Policies live in sql/functions/50_portal.sql.
CREATE TABLE portal_links (
    token_hash   text PRIMARY KEY,
    org_id       uuid NOT NULL REFERENCES organizations (id),
    member       text NOT NULL,
    return_url   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    CONSTRAINT portal_links_lifetime CHECK (expires_at > created_at)
);
CREATE INDEX idx_portal_links_expires ON portal_links (expires_at);

CREATE TABLE portal_sessions (
    session_hash  text PRIMARY KEY,
    org_id        uuid NOT NULL REFERENCES organizations (id),
    member        text NOT NULL,
    return_url    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    -- However active, a session ends here: a new link is needed (a few hours).
    expires_at    timestamptz NOT NULL,
    ended_at      timestamptz
);
CREATE INDEX idx_portal_sessions_expires ON portal_sessions (expires_at);

ALTER TABLE portal_links ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_links FORCE ROW LEVEL SECURITY;
ALTER TABLE portal_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE portal_sessions FORCE ROW LEVEL SECURITY;

GRANT SELECT, INSERT, UPDATE ON portal_links TO billing_app;
GRANT SELECT, INSERT, UPDATE ON portal_sessions TO billing_app;
