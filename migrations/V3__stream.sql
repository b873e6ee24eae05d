-- Durable stream cursors of `kite listen` clients, and how far retention has pruned events.
CREATE TABLE stream_cursors (
    team_id     text NOT NULL,
    client_id   text NOT NULL,
    acked_seq   bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, client_id)
);

CREATE TABLE stream_retention (
    team_id          text PRIMARY KEY,
    pruned_through   bigint NOT NULL
);

CREATE INDEX events_received ON events (received_at);
