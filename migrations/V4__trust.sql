-- Trust at the edges: key ids, legacy signatures, secret rotation, provider sources.
ALTER TABLE peers
    ADD COLUMN key_id text,
    ADD COLUMN previous_outbound_token text,
    ADD COLUMN previous_until timestamptz;

ALTER TABLE trusted_senders
    ADD COLUMN key_id text,
    ADD COLUMN legacy_signature boolean NOT NULL DEFAULT false,
    ADD COLUMN previous_inbound_token text,
    ADD COLUMN previous_until timestamptz;
CREATE UNIQUE INDEX trusted_senders_key_id ON trusted_senders (team_id, key_id);

CREATE TABLE sources (
    id              uuid PRIMARY KEY,
    team_id         text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name            text NOT NULL,
    scheme          text NOT NULL,
    secret          text NOT NULL,
    previous_secret text,
    previous_until  timestamptz,
    header_name     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (team_id, name)
);
CREATE TRIGGER sources_changed AFTER INSERT OR UPDATE OR DELETE ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();
