-- no-transaction
-- The purge asks, for each expired customer, whether they ordered since the
-- cutoff: by customer, then time, so a regular with years of orders costs a
-- probe, not a scan of them. Built concurrently: a large tenant's orders
-- keep flowing while it is built. A build cut off part way leaves an
-- invalid index and this migration unrecorded; the next `neo-ops migrate`
-- then fails naming the index: drop it (DROP INDEX CONCURRENTLY
-- orders_customer_placed) and migrate again. (No IF NOT EXISTS: it would
-- record the invalid index as done.)
CREATE INDEX CONCURRENTLY orders_customer_placed ON orders (customer_id, placed_at);
