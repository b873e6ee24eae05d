-- A commit of events notifies `kite_events` (the stream connections' wake-up) only while a
-- process has stream connections open: such a process keeps a row here, renewed while it
-- streams (`kite_store::notify::Listening`). An instance nobody streams from pays no
-- notification, and no wake-up of its listening connections, for each commit; a stream
-- that misses a wake-up still reads every second.
CREATE TABLE stream_listeners (
    process text PRIMARY KEY,
    until timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION kite_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM stream_listeners WHERE until > now()) THEN
        PERFORM pg_notify('kite_events', '');
    END IF;
    RETURN NULL;
END $$;
