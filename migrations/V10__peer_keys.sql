-- Peer keys: notified per peer, and the index key queries are answered from.
-- A change to one peer's pinned keys reloads that peer's keys, not every cache: the change
-- is notified on a channel of its own, with the peer's id.
DROP TRIGGER peer_keys_changed ON peer_keys;
CREATE FUNCTION kite_notify_peer_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kite_peer_keys', COALESCE(NEW.peer_id, OLD.peer_id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER peer_keys_changed AFTER INSERT OR UPDATE OR DELETE ON peer_keys
    FOR EACH ROW EXECUTE FUNCTION kite_notify_peer_keys();

-- A key query is answered only for a key that signed an event this team sent the asking
-- peer (or holds for it to pull): found by the events' origin signature key.
CREATE INDEX events_sigkey ON events (team_id, fed_sigkey, seq) WHERE fed_sigkey IS NOT NULL;
