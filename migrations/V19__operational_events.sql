-- Operational events: kite's own CloudEvents about a team's peers, deliveries and identity
-- (`kite.peer.degraded`, `kite.delivery.dead`, ...). Triggers note what happened as signals;
-- a delivery process turns them into events on the team's stream (coalesced per subject) and
-- delivers those to the team's operational endpoint. They are never routed to peers.

-- A team's operational endpoint: where its operational events are POSTed, signed with the
-- sealed Standard Webhooks secret.
CREATE TABLE operational_endpoints (
    team_id     text PRIMARY KEY REFERENCES teams(id) ON DELETE CASCADE,
    url         text NOT NULL,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What happened, as the triggers saw it; taken (and deleted) by the emitter.
CREATE TABLE operational_signals (
    id       bigserial PRIMARY KEY,
    team_id  text,               -- NULL: every team (the server's identity)
    kind     text NOT NULL CHECK (kind IN ('health', 'status', 'dead', 'identity')),
    subject  text,               -- the peer's id
    value    text NOT NULL,      -- the new health; 'old>new' status; the dead row's id; the key id
    at       timestamptz NOT NULL DEFAULT now()
);

-- The coalescing state of one subject of a team: what was emitted last and when, and what
-- waits for the end of its window.
CREATE TABLE operational_marks (
    team_id        text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    key            text NOT NULL,
    last_type      text,
    last_at        timestamptz NOT NULL,
    pending_type   text,
    pending_data   jsonb,
    pending_count  int NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, key)
);
CREATE INDEX operational_marks_pending ON operational_marks (last_at) WHERE pending_type IS NOT NULL;

-- An operational event's delivery to its team's endpoint.
CREATE TABLE operational_deliveries (
    event_seq        bigint PRIMARY KEY REFERENCES events(seq) ON DELETE CASCADE,
    team_id          text NOT NULL REFERENCES operational_endpoints(team_id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      int,
    last_error       text,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX operational_deliveries_due ON operational_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX operational_deliveries_team ON operational_deliveries (team_id, updated_at);

CREATE FUNCTION kite_signal_peer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO operational_signals (team_id, kind, subject, value)
        VALUES (NEW.team_id, 'status', NEW.id::text, '>' || NEW.status);
        RETURN NULL;
    END IF;
    IF NEW.health IS DISTINCT FROM OLD.health THEN
        INSERT INTO operational_signals (team_id, kind, subject, value)
        VALUES (NEW.team_id, 'health', NEW.id::text, NEW.health);
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO operational_signals (team_id, kind, subject, value)
        VALUES (NEW.team_id, 'status', NEW.id::text, OLD.status || '>' || NEW.status);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER peers_signal_insert AFTER INSERT ON peers
    FOR EACH ROW EXECUTE FUNCTION kite_signal_peer();
CREATE TRIGGER peers_signal_update AFTER UPDATE OF health, status ON peers
    FOR EACH ROW WHEN (OLD.health IS DISTINCT FROM NEW.health OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION kite_signal_peer();

CREATE FUNCTION kite_signal_dead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO operational_signals (team_id, kind, subject, value)
    VALUES (NEW.team_id, 'dead', NEW.peer_id::text, NEW.id::text);
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_signal_dead AFTER UPDATE OF state ON outbox
    FOR EACH ROW WHEN (NEW.state = 'dead' AND OLD.state IS DISTINCT FROM 'dead')
    EXECUTE FUNCTION kite_signal_dead();

-- The first key of a new instance is not a rotation: only a key made while another exists.
CREATE FUNCTION kite_signal_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM server_keys WHERE key_id <> NEW.key_id) THEN
        INSERT INTO operational_signals (team_id, kind, subject, value)
        VALUES (NULL, 'identity', NULL, NEW.key_id);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER server_keys_signal AFTER INSERT ON server_keys
    FOR EACH ROW WHEN (NEW.valid_until IS NULL)
    EXECUTE FUNCTION kite_signal_identity();
