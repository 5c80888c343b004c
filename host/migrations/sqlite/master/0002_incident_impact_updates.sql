-- Statuspage-style incidents: an impact level and timestamped updates.
ALTER TABLE incidents ADD COLUMN impact TEXT NOT NULL DEFAULT 'minor'
    CHECK (impact IN ('minor', 'major', 'critical'));

CREATE TABLE incident_updates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id INTEGER NOT NULL REFERENCES incidents(id),
    status      TEXT NOT NULL DEFAULT 'investigating',
    message     TEXT NOT NULL,
    created_at  DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX incident_updates_incident ON incident_updates(incident_id, created_at);
