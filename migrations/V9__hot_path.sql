-- The tables every event writes keep only the indexes something reads.
--
-- Deliveries and attempts no longer check their parent row on every insert (a foreign key
-- check locks the parent row: a lookup and a WAL record per row, for rows the same
-- statement has just written). Whatever removes events removes their deliveries and
-- attempts with them, in one statement (`Store::prune`, `Store::delete_team`).
ALTER TABLE outbox DROP CONSTRAINT outbox_event_seq_fkey;
ALTER TABLE attempts DROP CONSTRAINT attempts_outbox_id_fkey;

-- `received_at` grows with `seq`, so a block range index answers "older than" and "since"
-- as well as a B-tree, at a fraction of its upkeep.
DROP INDEX events_received;
CREATE INDEX events_received ON events USING brin (received_at);

-- Attempts are only ever read by their delivery, in order: that index is their key, and the
-- separate one on `id` alone goes.
ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
DROP INDEX attempts_outbox;
ALTER TABLE attempts ADD PRIMARY KEY (outbox_id, id);
