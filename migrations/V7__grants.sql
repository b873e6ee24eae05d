-- Scoped, expiring grants a team gives a handshake peer: `send` (event types it may send
-- here) and `backfill` (event types it may pull from here).
CREATE TABLE peer_grants (
    id           uuid PRIMARY KEY,
    team_id      text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    peer_id      uuid NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    permissions  text[] NOT NULL,
    scopes       text[] NOT NULL,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peer_grants_peer ON peer_grants (peer_id);
CREATE TRIGGER peer_grants_changed AFTER INSERT OR UPDATE OR DELETE ON peer_grants
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();

-- An event's origin signature (`kitefedsig`, `kitefedsigkey`), kept beside it like the other
-- federation extensions.
ALTER TABLE events ADD COLUMN fed_sig text, ADD COLUMN fed_sigkey text;
