-- Events are kept as the exact JSON text kite forwards (the `json` type keeps text as it
-- came; `jsonb` re-renders it with spaces and expanded numbers, so its size was not what
-- was checked at ingest) without their federation extensions, which get typed columns.
ALTER TABLE events
    ADD COLUMN fed_origin text,
    ADD COLUMN fed_chain text[] NOT NULL DEFAULT '{}',
    ADD COLUMN fed_hops int NOT NULL DEFAULT 0;

UPDATE events SET
    fed_origin = event->>'kitefedorigin',
    fed_chain = COALESCE(ARRAY(SELECT jsonb_array_elements_text((event->>'kitefedchain')::jsonb)), '{}'),
    fed_hops = COALESCE((event->>'kitefedhops')::int, 0)
WHERE event ? 'kitefedorigin' OR event ? 'kitefedchain' OR event ? 'kitefedhops';

ALTER TABLE events ALTER COLUMN event TYPE json
    USING (event - 'kitefedorigin' - 'kitefedchain' - 'kitefedhops' - 'kiteseq')::json;

-- An event on one hook never makes another hook's event a duplicate.
ALTER TABLE events DROP CONSTRAINT events_team_id_ce_source_ce_id_key;
ALTER TABLE events ADD CONSTRAINT events_identity UNIQUE (team_id, hook_source, ce_source, ce_id);
