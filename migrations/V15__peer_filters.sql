-- A peer's filters (CloudEvents Subscriptions dialects), as the API wrote them: every event
-- it takes must match all of them beside its scopes.
ALTER TABLE peers ADD COLUMN filters jsonb NOT NULL DEFAULT '[]';
