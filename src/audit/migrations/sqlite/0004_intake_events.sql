-- Decisions of producers that file Incidents (the Alertmanager intake): created, updated, resolved,
-- deduplicated, ignored, refused and why. Append-only; not part of any session.
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
