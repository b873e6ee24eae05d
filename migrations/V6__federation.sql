-- Federation trust: the instance's identity keys, per-team policy, invitations, handshake
-- peers with pinned keys and heartbeats.
CREATE TABLE server_keys (
    key_id      text PRIMARY KEY,
    secret      text NOT NULL,
    public_key  text NOT NULL,
    valid_from  timestamptz NOT NULL DEFAULT now(),
    valid_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one current key.
CREATE UNIQUE INDEX server_keys_current ON server_keys ((true)) WHERE valid_until IS NULL;
CREATE TRIGGER server_keys_changed AFTER INSERT OR UPDATE OR DELETE ON server_keys
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();

CREATE TABLE federation_policies (
    team_id        text PRIMARY KEY REFERENCES teams(id) ON DELETE CASCADE,
    default_mode   text NOT NULL DEFAULT 'open' CHECK (default_mode IN ('open', 'invite_only', 'closed')),
    allowed_peers  text[] NOT NULL DEFAULT '{}',
    max_backfill_events_per_request int NOT NULL DEFAULT 1000,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER federation_policies_changed AFTER INSERT OR UPDATE OR DELETE ON federation_policies
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();

CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    team_id     text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    token_hash  text NOT NULL UNIQUE,
    scopes      text[] NOT NULL,
    max_hops    int NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_by     text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE peers
    ADD COLUMN server_name text,
    ADD COLUMN peer_base_url text,
    ADD COLUMN peer_team text,
    ADD COLUMN last_heartbeat_at timestamptz,
    ADD COLUMN last_heartbeat_ok_at timestamptz,
    ADD COLUMN heartbeat_claimed_at timestamptz,
    ADD COLUMN heartbeat_failures int NOT NULL DEFAULT 0;
ALTER TABLE peers DROP CONSTRAINT peers_status_check;
ALTER TABLE peers ADD CONSTRAINT peers_status_check
    CHECK (status IN ('proposed', 'accepted', 'active', 'degraded', 'paused', 'revoked'));
CREATE UNIQUE INDEX peers_server_name ON peers (team_id, server_name);

CREATE TABLE peer_keys (
    peer_id     uuid NOT NULL REFERENCES peers(id) ON DELETE CASCADE,
    key_id      text NOT NULL,
    public_key  text NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz,
    PRIMARY KEY (peer_id, key_id)
);
CREATE TRIGGER peer_keys_changed AFTER INSERT OR UPDATE OR DELETE ON peer_keys
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();
