-- The filters an invitation puts on the peer its acceptance makes (what the inviter sends
-- it), as the API wrote them.
ALTER TABLE invitations ADD COLUMN filters jsonb NOT NULL DEFAULT '[]';
