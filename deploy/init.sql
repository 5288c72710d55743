-- trackgate's PostgreSQL schema (PG_TABLE=events_json). The sink runs this
-- very file at start when PG_CREATE_TABLE=true (with the table name it is
-- configured with), so it is safe to run again: every statement is
-- IF NOT EXISTS. To create the table yourself (PG_CREATE_TABLE=false):
--   psql "$PG_DSN" -v ON_ERROR_STOP=1 -f deploy/init.sql
-- payload holds the whole event line, so payload->>'type' works.
CREATE TABLE IF NOT EXISTS events_json (
    id       BIGSERIAL PRIMARY KEY,
    event_id UUID UNIQUE NOT NULL,
    ts       TIMESTAMPTZ NOT NULL,
    payload  JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_json_ts_idx ON events_json (ts);
CREATE INDEX IF NOT EXISTS events_json_payload_idx ON events_json USING GIN (payload);
