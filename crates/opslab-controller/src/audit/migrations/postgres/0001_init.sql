-- The same schema as SQLite's migrations 0001-0002, in PostgreSQL's types: every integer BIGINT
-- (the store binds 64-bit values), booleans BOOLEAN. Times stay RFC 3339 text: the hash covers them.

-- Sessions: one agent run for one Incident. The counters and the report are a projection of the
-- session's events, updated in the same transaction as each event. head_seq/head_hash are the last
-- link of the event chain, so a cut-off tail is detectable.
CREATE TABLE sessions (
    id                 TEXT PRIMARY KEY,
    incident_uid       TEXT NOT NULL,
    incident_namespace TEXT NOT NULL,
    incident_name      TEXT NOT NULL,
    attempt            BIGINT NOT NULL,
    generation         BIGINT NOT NULL,
    state              TEXT NOT NULL,          -- running | finished
    phase              TEXT NOT NULL,
    outcome            TEXT,
    reason             TEXT,
    started_at         TEXT NOT NULL,
    finished_at        TEXT,
    turns              BIGINT NOT NULL DEFAULT 0,
    commands           BIGINT NOT NULL DEFAULT 0,
    input_tokens       BIGINT NOT NULL DEFAULT 0,
    output_tokens      BIGINT NOT NULL DEFAULT 0,
    report             TEXT,                   -- JSON
    head_seq           BIGINT NOT NULL DEFAULT 0,
    head_hash          TEXT NOT NULL DEFAULT '',
    -- Estimated model spend in US dollars (a projection of llm_response events).
    cost_usd           DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_incident ON sessions (incident_uid, started_at);
CREATE INDEX sessions_running ON sessions (state);

-- Refuses any change to an append-only table.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit % are append-only', TG_TABLE_NAME;
END
$$;

-- The audit trail: append-only, one gapless sequence per session, each row hashed with the previous.
-- id is the insertion order, which verify reads in (so reordered seq values show).
CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    seq        BIGINT NOT NULL,
    at         TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,                  -- JSON, secrets redacted
    hash       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Chain heads, one row per append, apart from the session row (see src/audit/postgres.rs).
CREATE TABLE anchors (
    session_id TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    hash       TEXT NOT NULL
);
CREATE INDEX anchors_by_session ON anchors (session_id, seq);
CREATE TRIGGER anchors_no_update BEFORE UPDATE ON anchors FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER anchors_no_delete BEFORE DELETE ON anchors FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER anchors_no_truncate BEFORE TRUNCATE ON anchors FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Commands: a projection of command_* events, for status and queries. Keyed by the event that
-- started them: some model servers reuse tool-call ids across turns.
CREATE TABLE commands (
    session_id   TEXT NOT NULL REFERENCES sessions (id),
    tool_use_id  TEXT NOT NULL,
    command      TEXT NOT NULL,
    reasoning    TEXT NOT NULL,
    state        TEXT NOT NULL,                -- started | finished | interrupted
    exit_code    BIGINT,
    duration_ms  BIGINT,
    timed_out    BOOLEAN,
    started_seq  BIGINT NOT NULL,
    finished_seq BIGINT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    summary      TEXT,
    PRIMARY KEY (session_id, started_seq)
);

-- Incidents as the controller last saw them, with their status (or their manifest's error).
CREATE TABLE incidents (
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    uid        TEXT NOT NULL,
    generation BIGINT NOT NULL,
    spec_hash  TEXT NOT NULL,
    source     TEXT NOT NULL,
    incident   TEXT NOT NULL,                  -- JSON
    error      TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
);
