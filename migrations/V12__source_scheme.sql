-- A source's signature scheme is one of `wire::provider::Scheme`'s names (the API only ever
-- wrote those). It is read through that enum when the senders' cache loads, so no row may
-- hold another: one would fail every team's snapshot, not one source's requests.
ALTER TABLE sources ADD CONSTRAINT sources_scheme_check
    CHECK (scheme IN ('stripe', 'github', 'slack', 'standard-webhooks', 'hmac-sha256'));
