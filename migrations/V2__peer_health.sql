-- Peer health: `active`, `degraded` (failing), `unreachable` (deliveries parked, probed).
ALTER TABLE peers ADD COLUMN health text NOT NULL DEFAULT 'active'
    CHECK (health IN ('active', 'degraded', 'unreachable'));

-- Delivery bookkeeping (last_success_at, counters) must not invalidate every cache: notify
-- on updates only when something routing or delivery depends on changed.
DROP TRIGGER peers_changed ON peers;
CREATE TRIGGER peers_added_or_removed AFTER INSERT OR DELETE ON peers
    FOR EACH STATEMENT EXECUTE FUNCTION kite_notify_config();
CREATE TRIGGER peers_updated AFTER UPDATE ON peers
    FOR EACH ROW WHEN (
        OLD.name IS DISTINCT FROM NEW.name OR
        OLD.peer_hook_url IS DISTINCT FROM NEW.peer_hook_url OR
        OLD.outbound_token IS DISTINCT FROM NEW.outbound_token OR
        OLD.scopes IS DISTINCT FROM NEW.scopes OR
        OLD.max_hops IS DISTINCT FROM NEW.max_hops OR
        OLD.status IS DISTINCT FROM NEW.status OR
        OLD.health IS DISTINCT FROM NEW.health OR
        OLD.peer_instance_id IS DISTINCT FROM NEW.peer_instance_id)
    EXECUTE FUNCTION kite_notify_config();
