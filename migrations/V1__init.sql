-- kite's system of record.
CREATE TABLE teams (
    id          text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid PRIMARY KEY,
    team_id     text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    prefix      text NOT NULL,
    key_hash    text NOT NULL UNIQUE,
    permission  text NOT NULL DEFAULT 'admin' CHECK (permission IN ('read', 'write', 'admin')),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE federation_tokens (
    id          uuid PRIMARY KEY,
    team_id     text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    label       text NOT NULL,
    token_hash  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE peers (
    id                   uuid PRIMARY KEY,
    team_id              text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name                 text NOT NULL,
    peer_hook_url        text NOT NULL,
    outbound_token       text NOT NULL,
    scopes               text[] NOT NULL,
    max_hops             int NOT NULL,
    status               text NOT NULL CHECK (status IN ('active', 'paused', 'revoked')),
    peer_instance_id     text,
    last_error           text,
    last_status_code     int,
    last_error_at        timestamptz,
    last_success_at      timestamptz,
    consecutive_failures int NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE trusted_senders (
    id             uuid PRIMARY KEY,
    team_id        text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name           text NOT NULL,
    inbound_token  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);

CREATE TABLE events (
    seq          bigserial PRIMARY KEY,
    team_id      text NOT NULL,
    ce_source    text NOT NULL,
    ce_id        text NOT NULL,
    hook_source  text NOT NULL,
    ce_type      text NOT NULL,
    event        jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    routed_at    timestamptz,
    UNIQUE (team_id, ce_source, ce_id)
);
CREATE INDEX events_unrouted ON events (received_at) WHERE routed_at IS NULL;
CREATE INDEX events_team_seq ON events (team_id, seq);

CREATE TABLE outbox (
    id                bigserial PRIMARY KEY,
    event_seq         bigint NOT NULL REFERENCES events(seq) ON DELETE CASCADE,
    peer_id           uuid NOT NULL,
    team_id           text NOT NULL,
    state             text NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'cancelled', 'skipped')),
    reason            text,
    attempts          int NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_error        text,
    last_status_code  int,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz,
    UNIQUE (event_seq, peer_id)
);
CREATE INDEX outbox_peer_state ON outbox (peer_id, state, id);
CREATE INDEX outbox_pending_due ON outbox (next_attempt_at) WHERE state = 'pending';

-- Caches of peers and trusted senders refresh when these change.
CREATE FUNCTION kite_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kite_config', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER peers_changed AFTER INSERT OR UPDATE OR DELETE ON peers
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();
CREATE TRIGGER senders_changed AFTER INSERT OR UPDATE OR DELETE ON trusted_senders
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();

-- Stream listeners wake when events are committed.
CREATE FUNCTION kite_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kite_events', '');
    RETURN NULL;
END $$;
CREATE TRIGGER events_inserted AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_events();
