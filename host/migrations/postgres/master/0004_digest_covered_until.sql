-- A digest sent by hand before its day was over covers the day up to that
-- instant: the evening's scheduled digest still goes (it covers more), and
-- is recorded over it. NULL: the send covered the whole day, or was the
-- scheduled one.
ALTER TABLE digest_sends ADD COLUMN covered_until TIMESTAMPTZ NULL;
