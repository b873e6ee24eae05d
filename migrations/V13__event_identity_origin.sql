-- An event's identity includes the origin it names: a peer that sends a copy of another
-- server's event first (under its own origin, the only one it can prove) no longer makes
-- the real one a duplicate. Events of provider hooks have no origin ('').
ALTER TABLE events DROP CONSTRAINT events_identity;
CREATE UNIQUE INDEX events_identity
    ON events (team_id, hook_source, ce_source, ce_id, coalesce(fed_origin, ''));
