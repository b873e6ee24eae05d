-- Every delivery attempt, for an event's story (`GET /api/events/{id}`); removed with its
-- outbox row, so retention is the events'.
CREATE TABLE attempts (
    id           bigserial PRIMARY KEY,
    outbox_id    bigint NOT NULL REFERENCES outbox(id) ON DELETE CASCADE,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    outcome      text NOT NULL,
    status_code  int,
    error        text,
    duration_ms  int NOT NULL
);
CREATE INDEX attempts_outbox ON attempts (outbox_id, id);
