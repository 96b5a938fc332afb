-- Decisions of producers that file Incidents (the Alertmanager intake): created, updated, resolved,
-- deduplicated, ignored, refused and why. Append-only, like the events; not part of any session.
CREATE TABLE intake_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    producer    TEXT NOT NULL,
    decision    TEXT NOT NULL,
    reason      TEXT,
    alert_group TEXT,
    incident    TEXT,
    message     TEXT NOT NULL
);
CREATE TRIGGER intake_events_no_update BEFORE UPDATE ON intake_events
BEGIN
    SELECT RAISE(ABORT, 'audit intake events are append-only');
END;
CREATE TRIGGER intake_events_no_delete BEFORE DELETE ON intake_events
BEGIN
    SELECT RAISE(ABORT, 'audit intake events are append-only');
END;
