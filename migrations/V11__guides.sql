-- What the federation guides still asked: a token peer's inbound token (the token the peer
-- signs its events to this side with), the protocol version agreed with a handshake peer,
-- and a team's least signature protocol.
ALTER TABLE peers
    ADD COLUMN inbound_token text,
    ADD COLUMN protocol_version text;
ALTER TABLE federation_policies
    ADD COLUMN min_signature_protocol text NOT NULL DEFAULT 'token'
        CHECK (min_signature_protocol IN ('token', 'identity'));

-- The senders' cache reads inbound tokens: a change to one reloads it.
DROP TRIGGER peers_updated ON peers;
CREATE TRIGGER peers_updated AFTER UPDATE ON peers
    FOR EACH ROW WHEN (
        OLD.name IS DISTINCT FROM NEW.name OR
        OLD.peer_hook_url IS DISTINCT FROM NEW.peer_hook_url OR
        OLD.outbound_token IS DISTINCT FROM NEW.outbound_token OR
        OLD.inbound_token IS DISTINCT FROM NEW.inbound_token OR
        OLD.scopes IS DISTINCT FROM NEW.scopes OR
        OLD.max_hops IS DISTINCT FROM NEW.max_hops OR
        OLD.status IS DISTINCT FROM NEW.status OR
        OLD.health IS DISTINCT FROM NEW.health OR
        OLD.peer_instance_id IS DISTINCT FROM NEW.peer_instance_id)
    EXECUTE FUNCTION kite_notify_config();
