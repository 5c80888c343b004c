-- neo-ops TENANT schema (Postgres): one database per tenant. POS data (customers, tables,
-- staff, menu, orders, invoices, KOTs), notification outbox, webhooks and local settings.
-- Partial unique "*_live_uq" indexes are checked by ops preflight; keep their names.

CREATE TABLE customers (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    phone         TEXT NULL,
    email         TEXT NULL,
    address       TEXT NULL,
    anonymized_at TIMESTAMPTZ NULL,
    last_order_at TIMESTAMPTZ NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at    TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX customers_phone_live_uq ON customers(phone) WHERE deleted_at IS NULL AND phone IS NOT NULL;
CREATE INDEX customers_last_order ON customers(last_order_at, id);

CREATE TABLE dining_tables (
    id         BIGSERIAL PRIMARY KEY,
    code       TEXT NOT NULL,
    seats      INTEGER NOT NULL DEFAULT 4,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX dining_tables_code_live_uq ON dining_tables(code) WHERE deleted_at IS NULL;

CREATE TABLE staff (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL,
    role                TEXT NOT NULL DEFAULT 'waiter',
    pin_hash            TEXT NULL,
    pin_failed_attempts INTEGER NOT NULL DEFAULT 0,
    pin_locked_at       TIMESTAMPTZ NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at          TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX staff_name_live_uq ON staff(name) WHERE deleted_at IS NULL;

CREATE TABLE menu_items (
    id          BIGSERIAL PRIMARY KEY,
    sku         TEXT NOT NULL,
    name        TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at  TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX menu_items_sku_live_uq ON menu_items(sku) WHERE deleted_at IS NULL;

CREATE TABLE orders (
    id            BIGSERIAL PRIMARY KEY,
    table_id      BIGINT NULL REFERENCES dining_tables(id),
    customer_id   BIGINT NULL REFERENCES customers(id),
    staff_id      BIGINT NULL REFERENCES staff(id),
    status        TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN','PREPARING','READY','SERVED','PAID','CANCELLED')),
    total_minor   BIGINT NOT NULL DEFAULT 0,
    tip_minor     BIGINT NOT NULL DEFAULT 0,
    complimentary BOOLEAN NOT NULL DEFAULT false,
    placed_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    ready_at      TIMESTAMPTZ NULL,
    prep_seconds  INTEGER NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at    TIMESTAMPTZ NULL
);
CREATE INDEX orders_placed_at ON orders(placed_at);
CREATE INDEX orders_table_id ON orders(table_id);
CREATE INDEX orders_customer_id ON orders(customer_id);

CREATE TABLE order_items (
    id               BIGSERIAL PRIMARY KEY,
    order_id         BIGINT NOT NULL REFERENCES orders(id),
    menu_item_id     BIGINT NULL REFERENCES menu_items(id),
    name             TEXT NOT NULL,
    quantity         INTEGER NOT NULL,
    unit_price_minor BIGINT NOT NULL
);
CREATE INDEX order_items_order_id ON order_items(order_id);

CREATE TABLE invoices (
    id           BIGSERIAL PRIMARY KEY,
    order_id     BIGINT NOT NULL REFERENCES orders(id),
    number       TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    issued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    emailed_at   TIMESTAMPTZ NULL,
    deleted_at   TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX invoices_number_live_uq ON invoices(number) WHERE deleted_at IS NULL;

CREATE TABLE kots (
    id                   BIGSERIAL PRIMARY KEY,
    order_id             BIGINT NOT NULL REFERENCES orders(id),
    station              TEXT NOT NULL DEFAULT 'kitchen',
    printed_at           TIMESTAMPTZ NULL,
    reprint_requested_at TIMESTAMPTZ NULL,
    reprint_count        INTEGER NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX kots_order_id ON kots(order_id);

CREATE TABLE notification_outbox (
    id           BIGSERIAL PRIMARY KEY,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','failed')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ NULL
);
CREATE INDEX notification_outbox_status_id ON notification_outbox(status, id);

CREATE TABLE webhook_endpoints (
    id         BIGSERIAL PRIMARY KEY,
    url        TEXT NOT NULL,
    secret     TEXT NOT NULL,
    events     TEXT NOT NULL DEFAULT '*',
    active     BOOLEAN NOT NULL DEFAULT true,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ NULL
);
CREATE UNIQUE INDEX webhook_endpoints_url_live_uq ON webhook_endpoints(url) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id           BIGSERIAL PRIMARY KEY,
    endpoint_id  BIGINT NOT NULL REFERENCES webhook_endpoints(id),
    order_id     BIGINT NULL REFERENCES orders(id),
    event        TEXT NOT NULL,
    payload      JSONB NOT NULL DEFAULT '{}',
    status       TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','delivered','failed','dead')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at TIMESTAMPTZ NULL
);
CREATE INDEX webhook_deliveries_endpoint_id ON webhook_deliveries(endpoint_id, id);
CREATE INDEX webhook_deliveries_order_id ON webhook_deliveries(order_id);

CREATE TABLE webhook_breaker_events (
    id          BIGSERIAL PRIMARY KEY,
    endpoint_id BIGINT NOT NULL REFERENCES webhook_endpoints(id),
    event       TEXT NOT NULL CHECK (event IN ('open','half_open','close')),
    at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX webhook_breaker_events_at ON webhook_breaker_events(at);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
