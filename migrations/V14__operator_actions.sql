-- What a peer did with an event it took (`accepted`, `duplicate_ignored`, `loop_ignored`),
-- on the delivery and on the attempt that delivered it.
ALTER TABLE outbox ADD COLUMN peer_answer text
    CHECK (peer_answer IN ('accepted', 'duplicate_ignored', 'loop_ignored'));
ALTER TABLE attempts ADD COLUMN peer_answer text;

-- What an operator did to a delivery (resend, cancel, replay), for its story; removed with
-- its outbox row, as attempts are.
CREATE TABLE outbox_actions (
    outbox_id bigint NOT NULL,
    id        bigserial,
    at        timestamptz NOT NULL DEFAULT now(),
    action    text NOT NULL CHECK (action IN ('resend', 'cancel', 'replay')),
    by_key    text,
    PRIMARY KEY (outbox_id, id)
);

-- A peer's charts (`GET /api/federation/peers/{id}/stats`) read the attempts of the last
-- hour or day; `attempted_at` grows as attempts are written, so a block range index finds
-- them at a fraction of a B-tree's upkeep.
CREATE INDEX attempts_at ON attempts USING brin (attempted_at);

-- Hook sources that took unsigned posts (no signature configured for them): listed beside
-- the signed sources and marked, so an open hook is seen. At most 1,000 a team.
CREATE TABLE unsigned_sources (
    team_id    text NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
    name       text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, name)
);
