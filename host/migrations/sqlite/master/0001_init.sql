-- neo-ops MASTER schema (SQLite; timestamps stored as RFC3339 text, JSONB stored as text): tenants, admin API tokens, hash-chained audit log,
-- incidents, plugin runs and daily digest sends.

CREATE TABLE tenants (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT NOT NULL UNIQUE,
    display_name       TEXT NOT NULL,
    plan               TEXT NOT NULL DEFAULT 'standard',
    feature_flags      JSONB NOT NULL DEFAULT '{}',
    limits             JSONB NOT NULL DEFAULT '{}',
    time_zone          TEXT NOT NULL DEFAULT 'Asia/Kolkata',
    owner_email        TEXT,
    pii_retention_days INTEGER NOT NULL DEFAULT 365,
    created_at         DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    deleted_at         DATETIME NULL
);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin','super_admin')),
    token_hash TEXT NOT NULL,
    created_at DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    revoked_at DATETIME NULL
);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    tenant     TEXT NULL,
    request_id TEXT NULL,
    plugin     TEXT NULL,
    details    JSONB NOT NULL DEFAULT '{}',
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_log_tenant_id ON audit_log(tenant, id);

CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    title       TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '',
    started_at  DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    resolved_at DATETIME NULL
);
CREATE UNIQUE INDEX incidents_active_title ON incidents(title) WHERE resolved_at IS NULL;

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    plugin      TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    slot        TEXT NULL,
    replica     TEXT NOT NULL,
    started_at  DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    finished_at DATETIME NULL,
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running','ok','error','interrupted')),
    error       TEXT NULL
);
CREATE UNIQUE INDEX runs_slot ON runs(plugin, trigger, slot) WHERE slot IS NOT NULL;
CREATE INDEX runs_plugin_started ON runs(plugin, started_at);

CREATE TABLE digest_sends (
    tenant       TEXT NOT NULL,
    business_day TEXT NOT NULL,
    sent_at      DATETIME NULL,
    message_id   TEXT NULL,
    PRIMARY KEY (tenant, business_day)
);
