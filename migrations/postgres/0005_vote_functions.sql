-- The hot path on Postgres as server-side functions: `next`, a vote (with the next pair)
-- and a skip are one round trip each instead of ~17, which on a machine shared by server,
-- clients and database was most of a vote's cost (context switches, not SQL). They run the
-- same steps, under the same locks, as the Rust transactions SQLite runs (server/src/votes.rs
-- says why each step is there); keep the two in step.
--
-- Sequence numbers: a vote commits with `seq` NULL; `pairwise_sequence_votes`, called right
-- after (a second, short transaction, shared by the votes a server has in flight), numbers
-- every committed vote of the campaign that has none yet, under a per-campaign advisory lock. Numbering in batches keeps the campaign-wide
-- step out of the vote's own commit (holding the campaign row through every vote's WAL flush
-- capped the rate at one vote per flush), while `seq` stays gap-free and in commit order for
-- export cursors: each batch becomes visible at once, after the batch before it.
--
-- The functions but the last use generic plans: their statements' plans do not depend on
-- the arguments, and planning each statement anew on every call cost more than running it.
--
-- Errors the caller should show are raised with SQLSTATE class PW: PW404 (message: what was
-- not found), PW403 (message), PW409 (message `code|text`).

CREATE INDEX comparisons_unsequenced ON comparisons (campaign_id) WHERE seq IS NULL;

-- A vote's and a lease's campaign is their pair's (whose foreign key stays, and a campaign
-- with pairs cannot be deleted). Checking these two keys took a share lock on the one
-- campaign row in every concurrent vote: a hot row, shared through multixacts.
ALTER TABLE comparisons DROP CONSTRAINT comparisons_campaign_id_fkey;
ALTER TABLE assignments DROP CONSTRAINT assignments_campaign_id_fkey;

-- The rater's current or next pair (`Next` in the API): kind is assigned, waiting, done or
-- unavailable (then campaign_status says why).
CREATE FUNCTION pairwise_assign(c campaigns, p_rater BIGINT, p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT)
RETURNS TABLE (next_kind TEXT, campaign_status TEXT, campaign_id BIGINT, assignment_id BIGINT, pair_id BIGINT, prompt TEXT,
               messages TEXT, text_a TEXT, text_b TEXT, swapped BIGINT, expires_at BIGINT)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_held RECORD;
    v_regular BIGINT;
    v_gold BIGINT;
    v_pair BIGINT;
    v_is_gold BIGINT := 0;
    v_lease RECORD;
BEGIN
    IF c.status <> 'active' THEN
        RETURN QUERY SELECT 'unavailable'::TEXT, c.status, c.id, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                            NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    -- Leases past their expiry go back to the pool.
    WITH expired AS (
        UPDATE assignments SET status = 'expired'
        WHERE campaign_id = c.id AND status = 'active' AND expires_at <= p_now
        RETURNING pair_id, is_gold
    )
    UPDATE pairs p SET claimed = p.claimed - e.n
    FROM (SELECT pair_id, COUNT(*) AS n FROM expired WHERE is_gold = 0 GROUP BY pair_id) e
    WHERE p.id = e.pair_id;

    -- Asking again while holding a lease returns the same pair.
    SELECT a.id, a.pair_id, a.swapped, a.expires_at INTO v_held FROM assignments a
    WHERE a.rater_id = p_rater AND a.campaign_id = c.id AND a.status = 'active' ORDER BY a.id LIMIT 1;
    IF FOUND THEN
        v_lease := v_held;
    ELSE
        -- Skip pairs other transactions are claiming; if all are, wait for one (the lock
        -- grant re-checks `claimed`).
        SELECT p.id INTO v_regular FROM pairs p
        WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.claimed < c.overlap
          AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
        ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED;
        IF v_regular IS NULL THEN
            SELECT p.id INTO v_regular FROM pairs p
            WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.claimed < c.overlap
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
            ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1 FOR UPDATE OF p;
        END IF;
        IF v_regular IS NULL THEN
            RETURN QUERY SELECT
                CASE WHEN EXISTS (
                    SELECT 1 FROM pairs p WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.vote_count < c.overlap
                      AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
                ) THEN 'waiting' ELSE 'done' END::TEXT,
                c.status, c.id, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
            RETURN;
        END IF;
        -- Gold checks are mixed in only while there is real work, at the campaign's rate.
        IF c.gold_rate > 0 AND p_gold_roll < c.gold_rate THEN
            SELECT p.id INTO v_gold FROM pairs p
            WHERE p.campaign_id = c.id AND p.is_gold = 1
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
            ORDER BY p.vote_count, p.shuffle_key LIMIT 1;
        END IF;
        IF v_gold IS NOT NULL THEN
            v_pair := v_gold;
            v_is_gold := 1;
        ELSE
            UPDATE pairs SET claimed = claimed + 1 WHERE id = v_regular;
            v_pair := v_regular;
        END IF;
        -- A pair handed to the same rater again keeps its assignment id and left/right order.
        INSERT INTO assignments AS a (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at)
        VALUES (c.id, v_pair, p_rater, 'active', p_swap, v_is_gold, p_now, p_now + c.lease_seconds * 1000)
        ON CONFLICT (pair_id, rater_id) DO UPDATE SET status = 'active', swapped = a.swapped,
            created_at = excluded.created_at, expires_at = excluded.expires_at
        RETURNING a.id, a.pair_id, a.swapped, a.expires_at INTO v_lease;
    END IF;
    RETURN QUERY SELECT 'assigned'::TEXT, c.status, c.id, v_lease.id, v_lease.pair_id, pr.text, pr.messages, ra.text, rb.text,
                        v_lease.swapped, v_lease.expires_at
    FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id JOIN responses ra ON ra.id = p.response_a_id
    JOIN responses rb ON rb.id = p.response_b_id WHERE p.id = v_lease.pair_id;
END
$$;

CREATE FUNCTION pairwise_next(p_campaign BIGINT, p_rater BIGINT, p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT)
RETURNS TABLE (next_kind TEXT, campaign_status TEXT, campaign_id BIGINT, assignment_id BIGINT, pair_id BIGINT, prompt TEXT,
               messages TEXT, text_a TEXT, text_b TEXT, swapped BIGINT, expires_at BIGINT)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    c campaigns;
BEGIN
    SELECT * INTO c FROM campaigns WHERE id = p_campaign;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'campaign %', p_campaign USING ERRCODE = 'PW404';
    END IF;
    RETURN QUERY SELECT * FROM pairwise_assign(c, p_rater, p_now, p_gold_roll, p_swap);
END
$$;

-- Gives a leased pair back without voting; it will not be offered to this rater again.
CREATE FUNCTION pairwise_skip(p_assignment BIGINT, p_rater BIGINT, p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT)
RETURNS TABLE (next_kind TEXT, campaign_status TEXT, campaign_id BIGINT, assignment_id BIGINT, pair_id BIGINT, prompt TEXT,
               messages TEXT, text_a TEXT, text_b TEXT, swapped BIGINT, expires_at BIGINT)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v RECORD;
    c campaigns;
BEGIN
    SELECT a.campaign_id, a.pair_id, a.status, a.is_gold INTO v FROM assignments a
    WHERE a.id = p_assignment AND a.rater_id = p_rater FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'assignment %', p_assignment USING ERRCODE = 'PW404';
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = v.campaign_id;
    IF v.status = 'voted' THEN
        RAISE EXCEPTION 'already_voted|this pair was already voted on' USING ERRCODE = 'PW409';
    END IF;
    UPDATE assignments SET status = 'skipped' WHERE id = p_assignment;
    -- An expired lease's slot already went back to the pool.
    IF v.status = 'active' AND v.is_gold = 0 THEN
        UPDATE pairs SET claimed = claimed - 1 WHERE id = v.pair_id;
    END IF;
    RETURN QUERY SELECT * FROM pairwise_assign(c, p_rater, p_now, p_gold_roll, p_swap);
END
$$;

-- Records a vote (idempotent on the client key) and hands out the next pair. `p_choice` is
-- the choice as seen on screen (left, right, tie, both_bad); exactly one of p_assignment
-- (leased vote) and p_pair (free vote, with p_swapped as shown) is given. The vote's `seq`
-- is NULL until `pairwise_sequence_votes`.
CREATE FUNCTION pairwise_vote(p_rater BIGINT, p_assignment BIGINT, p_pair BIGINT, p_swapped BIGINT, p_choice TEXT,
                              p_strength BIGINT, p_rationale TEXT, p_time_ms BIGINT, p_client_key TEXT,
                              p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT)
RETURNS TABLE (vote_id BIGINT, vote_seq BIGINT, vote_pair_id BIGINT, vote_choice TEXT, vote_strength BIGINT,
               vote_swapped BIGINT, vote_created_at BIGINT, duplicate BIGINT, my_votes BIGINT,
               next_kind TEXT, campaign_status TEXT, campaign_id BIGINT, assignment_id BIGINT, pair_id BIGINT, prompt TEXT,
               messages TEXT, text_a TEXT, text_b TEXT, swapped BIGINT, expires_at BIGINT)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
#variable_conflict use_column
DECLARE
    v_campaign BIGINT;
    c campaigns;
    v_existing RECORD;
    v_lease RECORD;
    v_held RECORD;
    v_assignment BIGINT;
    v_pair BIGINT;
    v_swapped BIGINT;
    v_choice TEXT;
    v_strength BIGINT;
    v_vote BIGINT;
    v_my BIGINT;
BEGIN
    IF p_assignment IS NOT NULL THEN
        SELECT a.campaign_id INTO v_campaign FROM assignments a WHERE a.id = p_assignment AND a.rater_id = p_rater;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'assignment %', p_assignment USING ERRCODE = 'PW404';
        END IF;
    ELSE
        SELECT p.campaign_id INTO v_campaign FROM pairs p WHERE p.id = p_pair;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pair %', p_pair USING ERRCODE = 'PW404';
        END IF;
    END IF;
    SELECT * INTO c FROM campaigns WHERE id = v_campaign;

    SELECT k.id, k.seq, k.pair_id, k.choice, k.strength, k.swapped, k.created_at INTO v_existing
    FROM comparisons k WHERE k.rater_id = p_rater AND k.client_key = p_client_key;
    IF FOUND THEN
        IF (p_pair IS NOT NULL AND p_pair <> v_existing.pair_id)
           OR (p_pair IS NULL AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.id = p_assignment AND a.pair_id = v_existing.pair_id)) THEN
            RAISE EXCEPTION 'key_reused|client_key was already used for a different pair' USING ERRCODE = 'PW409';
        END IF;
        SELECT COALESCE((SELECT r.votes FROM rater_progress r WHERE r.rater_id = p_rater AND r.campaign_id = c.id), 0) INTO v_my;
        RETURN QUERY SELECT v_existing.id, v_existing.seq, v_existing.pair_id, v_existing.choice, v_existing.strength,
                            v_existing.swapped, v_existing.created_at, 1::BIGINT, v_my, n.*
        FROM pairwise_assign(c, p_rater, p_now, p_gold_roll, p_swap) n;
        RETURN;
    END IF;
    IF c.status = 'closed' THEN
        RAISE EXCEPTION 'campaign_closed|the campaign is closed' USING ERRCODE = 'PW409';
    END IF;

    IF p_assignment IS NOT NULL THEN
        SELECT a.pair_id, a.status, a.swapped, a.is_gold INTO v_lease FROM assignments a WHERE a.id = p_assignment FOR UPDATE;
        IF v_lease.status = 'voted' THEN
            RAISE EXCEPTION 'already_voted|you have already voted on this pair' USING ERRCODE = 'PW409';
        END IF;
        -- The lease lapsed (or was skipped): accept the work if the pair still has room.
        IF v_lease.status <> 'active' AND v_lease.is_gold = 0 THEN
            UPDATE pairs SET claimed = claimed + 1 WHERE id = v_lease.pair_id AND claimed < c.overlap;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'lease_expired|the lease on this pair expired and other raters completed it' USING ERRCODE = 'PW409';
            END IF;
        END IF;
        v_assignment := p_assignment;
        v_pair := v_lease.pair_id;
        v_swapped := v_lease.swapped;
    ELSE
        IF c.free_votes = 0 THEN
            RAISE EXCEPTION 'this campaign only accepts votes on leased pairs (assignment_id)' USING ERRCODE = 'PW403';
        END IF;
        IF c.status <> 'active' THEN
            RAISE EXCEPTION 'campaign_not_active|the campaign is not open for rating' USING ERRCODE = 'PW409';
        END IF;
        SELECT a.id, a.status INTO v_held FROM assignments a WHERE a.pair_id = p_pair AND a.rater_id = p_rater FOR UPDATE;
        -- Free votes skip the lease, not the overlap.
        IF NOT FOUND OR v_held.status <> 'active' THEN
            UPDATE pairs SET claimed = claimed + 1 WHERE id = p_pair AND (is_gold = 1 OR claimed < c.overlap);
            IF NOT FOUND THEN
                RAISE EXCEPTION 'pair_full|this pair already has the votes it needs' USING ERRCODE = 'PW409';
            END IF;
        END IF;
        INSERT INTO assignments AS a (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at)
        SELECT p.campaign_id, p.id, p_rater, 'voted', p_swapped, p.is_gold, p_now, p_now FROM pairs p WHERE p.id = p_pair
        ON CONFLICT (pair_id, rater_id) DO UPDATE SET swapped = excluded.swapped
        RETURNING a.id INTO v_assignment;
        v_pair := p_pair;
        v_swapped := p_swapped;
    END IF;

    v_choice := CASE p_choice
        WHEN 'left' THEN CASE WHEN v_swapped = 1 THEN 'b' ELSE 'a' END
        WHEN 'right' THEN CASE WHEN v_swapped = 1 THEN 'a' ELSE 'b' END
        ELSE p_choice END;
    v_strength := CASE WHEN v_choice IN ('a', 'b') THEN p_strength END;
    INSERT INTO comparisons AS k (campaign_id, pair_id, rater_id, assignment_id, choice, strength, rationale, time_ms,
                                  swapped, client_key, created_at)
    VALUES (c.id, v_pair, p_rater, v_assignment, v_choice, v_strength, p_rationale, p_time_ms, v_swapped, p_client_key, p_now)
    RETURNING k.id INTO v_vote;
    UPDATE pairs SET vote_count = vote_count + 1 WHERE id = v_pair;
    UPDATE assignments SET status = 'voted' WHERE id = v_assignment;
    INSERT INTO rater_progress AS r (rater_id, campaign_id, votes) VALUES (p_rater, c.id, 1)
    ON CONFLICT (rater_id, campaign_id) DO UPDATE SET votes = r.votes + 1 RETURNING r.votes INTO v_my;
    RETURN QUERY SELECT v_vote, NULL::BIGINT, v_pair, v_choice, v_strength, v_swapped, p_now, 0::BIGINT, v_my, n.*
    FROM pairwise_assign(c, p_rater, p_now, p_gold_roll, p_swap) n;
END
$$;

-- Numbers the campaign's committed votes that have no `seq` yet and returns the numbers of
-- the votes in `p_votes` (a JSON array of ids; NULL for none). Run in a transaction of its
-- own, after the votes commit. A server runs one call at a time for all its requests'
-- votes (votes/postgres.rs), so concurrent votes share a call.
CREATE FUNCTION pairwise_sequence_votes(p_campaign BIGINT, p_votes TEXT)
RETURNS TABLE (vote_id BIGINT, seq BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ids BIGINT[];
    v_base BIGINT;
    v_count BIGINT;
BEGIN
    v_ids := ARRAY(SELECT CAST(x AS BIGINT) FROM json_array_elements_text(COALESCE(p_votes, '[]')::json) x);
    -- Numbered already (by another server's call): no lock needed.
    IF p_votes IS NULL OR EXISTS (SELECT 1 FROM comparisons k WHERE k.id = ANY (v_ids) AND k.seq IS NULL) THEN
        -- An advisory lock rather than the campaign row: each statement below takes a fresh
        -- snapshot, so it sees the numbers of the call before it, and a caller with nothing
        -- left to number writes nothing.
        PERFORM pg_advisory_xact_lock(1885434455, p_campaign::INTEGER);
        IF EXISTS (SELECT 1 FROM comparisons k WHERE k.campaign_id = p_campaign AND k.seq IS NULL) THEN
            SELECT k.vote_seq INTO v_base FROM campaigns k WHERE k.id = p_campaign;
            UPDATE comparisons k SET seq = v_base + pending.n
            FROM (SELECT c.id, row_number() OVER (ORDER BY c.id) AS n FROM comparisons c
                  WHERE c.campaign_id = p_campaign AND c.seq IS NULL) pending
            WHERE k.id = pending.id;
            GET DIAGNOSTICS v_count = ROW_COUNT;
            UPDATE campaigns SET vote_seq = v_base + v_count WHERE id = p_campaign;
        END IF;
    END IF;
    RETURN QUERY SELECT k.id, k.seq FROM comparisons k WHERE k.id = ANY (v_ids);
END
$$;
