-- A rater's live lease, found through the unique `assignments_one_active (rater_id,
-- campaign_id)` whatever the statistics say.
--
-- 0012's `assignments_live_expiry (campaign_id, expires_at) WHERE status = 'active'` had the
-- same predicate as `assignments_one_active`, and before the table's first ANALYZE the two
-- cost the same to the planner, which took the expiry index for `pairwise_assign`'s lookup
-- of the rater's lease: a scan of every live lease of the campaign, filtered by rater. The
-- functions' generic plans are made on a connection's first call, often while the table is
-- still empty, and kept until statistics change, so with autovacuum late (or off) that scan
-- stayed on the hot path of every `next` and vote (105 µs of a vote's ~1.2 ms on a
-- 40,000-pair campaign with 64 raters). The expiry index now also names `expires_at IS NOT
-- NULL` (always true: the column is NOT NULL): every query that asks about expiry implies
-- it, so they still use the index, while a lookup without an `expires_at` condition cannot.

DROP INDEX assignments_live_expiry;
CREATE INDEX assignments_live_expiry ON assignments (campaign_id, expires_at)
    WHERE status = 'active' AND expires_at IS NOT NULL;
