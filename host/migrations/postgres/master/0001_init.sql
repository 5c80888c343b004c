-- neo-ops MASTER schema (Postgres): tenants, admin API tokens, hash-chained audit log,
-- incidents, plugin runs and daily digest sends.

CREATE TABLE tenants (
    id                 BIGSERIAL PRIMARY KEY,
    name               TEXT NOT NULL UNIQUE,
    display_name       TEXT NOT NULL,
    plan               TEXT NOT NULL DEFAULT 'standard',
    feature_flags      JSONB NOT NULL DEFAULT '{}',
    limits             JSONB NOT NULL DEFAULT '{}',
    time_zone          TEXT NOT NULL DEFAULT 'Asia/Kolkata',
    owner_email        TEXT,
    pii_retention_days INTEGER NOT NULL DEFAULT 365,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at         TIMESTAMPTZ NULL
);

CREATE TABLE api_tokens (
    id         BIGSERIAL PRIMARY KEY,
    token_id   TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin','super_admin')),
    token_hash TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ NULL
);

CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL DEFAULT now(),
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
    id          BIGSERIAL PRIMARY KEY,
    title       TEXT NOT NULL,
    details     TEXT NOT NULL DEFAULT '',
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX incidents_active_title ON incidents(title) WHERE resolved_at IS NULL;

CREATE TABLE runs (
    id          BIGSERIAL PRIMARY KEY,
    plugin      TEXT NOT NULL,
    trigger     TEXT NOT NULL,
    slot        TEXT NULL,
    replica     TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ NULL,
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running','ok','error','interrupted')),
    error       TEXT NULL
);
CREATE UNIQUE INDEX runs_slot ON runs(plugin, trigger, slot) WHERE slot IS NOT NULL;
CREATE INDEX runs_plugin_started ON runs(plugin, started_at);

CREATE TABLE digest_sends (
    tenant       TEXT NOT NULL,
    business_day TEXT NOT NULL,
    sent_at      TIMESTAMPTZ NULL,
    message_id   TEXT NULL,
    PRIMARY KEY (tenant, business_day)
);
