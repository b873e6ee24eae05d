-- An event's W3C trace context (the CloudEvents Distributed Tracing extension), kept beside
-- its text like the federation extensions: the context of the span that took it in here.
ALTER TABLE events ADD COLUMN trace_parent text, ADD COLUMN trace_state text;
