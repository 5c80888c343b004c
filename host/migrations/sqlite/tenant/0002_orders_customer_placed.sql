-- The purge asks, for each expired customer, whether they ordered since the
-- cutoff: by customer, then time, so a regular with years of orders costs a
-- probe, not a scan of them.
CREATE INDEX IF NOT EXISTS orders_customer_placed ON orders (customer_id, placed_at);
