-- How deliveries to a peer go, as the API wrote it: `ordering_key`, `on_dead`, `delivery`
-- (the peer's own retry schedule, timeout, requests in flight and rate) and `content_mode`.
ALTER TABLE peers ADD COLUMN conduct jsonb NOT NULL DEFAULT '{}';
-- The conduct an invitation puts on the peer its acceptance makes.
ALTER TABLE invitations ADD COLUMN conduct jsonb NOT NULL DEFAULT '{}';

-- An ordered peer's row carries its event's key (the value of the peer's ordering
-- attribute, '' when the event has none); only the first row of a key not yet settled
-- goes out.
ALTER TABLE outbox ADD COLUMN ordering_key text;
CREATE INDEX outbox_ordered ON outbox (peer_id, ordering_key, event_seq)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'dead');

-- Routing and delivery read filters and conduct: a change reloads the caches everywhere.
DROP TRIGGER peers_updated ON peers;
CREATE TRIGGER peers_updated AFTER UPDATE ON peers
    FOR EACH ROW WHEN (
        OLD.name IS DISTINCT FROM NEW.name OR
        OLD.peer_hook_url IS DISTINCT FROM NEW.peer_hook_url OR
        OLD.outbound_token IS DISTINCT FROM NEW.outbound_token OR
        OLD.inbound_token IS DISTINCT FROM NEW.inbound_token OR
        OLD.scopes IS DISTINCT FROM NEW.scopes OR
        OLD.filters IS DISTINCT FROM NEW.filters OR
        OLD.conduct IS DISTINCT FROM NEW.conduct OR
        OLD.max_hops IS DISTINCT FROM NEW.max_hops OR
        OLD.status IS DISTINCT FROM NEW.status OR
        OLD.health IS DISTINCT FROM NEW.health OR
        OLD.peer_instance_id IS DISTINCT FROM NEW.peer_instance_id)
    EXECUTE FUNCTION kite_notify_config();
