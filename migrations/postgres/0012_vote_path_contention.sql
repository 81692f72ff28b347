-- The Postgres vote path, lighter under concurrency.
--
-- Assignment: 0010's took the first open pair of the queue index with FOR UPDATE SKIP
-- LOCKED, so every concurrent request scanned the same front, tried the row lock of each
-- pair the others were claiming and stepped over the dead index entries they left before
-- reaching a free one: each request cost more the more were in flight. It now starts at a
-- random point among the front's equally-ranked pairs (those with the lowest vote_count and
-- claimed, which the old order ranked by shuffle_key, itself random, only to break ties), so
-- concurrent requests land apart. Pairs are still handed out least-voted and least-claimed
-- first: when the front has nothing for the rater, the whole queue is scanned in order as
-- before. SQLite serializes its writers and keeps the fixed order (votes/mod.rs).
--
-- Indexes a vote writes to: marking a lease voted is not a HOT update (its status is
-- indexed), so it added an entry to every index of `assignments`. The expiry index now holds
-- live leases only (the expiry sweep and the metrics ask for nothing else), and
-- `assignments_by_rater` goes: the rater's live lease is found through
-- `assignments_one_active` and their pairs through `UNIQUE (pair_id, rater_id)`. Likewise
-- `comparisons_by_pair` duplicated `UNIQUE (pair_id, rater_id)` (a pair's votes) and
-- `UNIQUE (campaign_id, seq)` (a campaign's), and `comparisons_by_rater` duplicated
-- `UNIQUE (rater_id, client_key)` (nothing asks for a rater's votes by campaign; the tallies
-- keep those).

DROP INDEX assignments_by_rater;
DROP INDEX assignments_expiry;
CREATE INDEX assignments_live_expiry ON assignments (campaign_id, expires_at) WHERE status = 'active';
DROP INDEX comparisons_by_pair;
DROP INDEX comparisons_by_rater;

CREATE OR REPLACE FUNCTION pairwise_assign(c campaigns, p_rater BIGINT, p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT)
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
    v_front RECORD;
    v_start BIGINT;
BEGIN
    IF c.status <> 'active' THEN
        RETURN QUERY SELECT 'unavailable'::TEXT, c.status, c.id, NULL::BIGINT, NULL::BIGINT, NULL::TEXT, NULL::TEXT,
                            NULL::TEXT, NULL::TEXT, NULL::BIGINT, NULL::BIGINT;
        RETURN;
    END IF;
    -- Leases past their expiry go back to the pool (looked for first: on most calls there
    -- are none, and the probe costs less than the update with its join).
    IF EXISTS (SELECT 1 FROM assignments a WHERE a.campaign_id = c.id AND a.status = 'active' AND a.expires_at <= p_now) THEN
        WITH expired AS (
            UPDATE assignments SET status = 'expired'
            WHERE campaign_id = c.id AND status = 'active' AND expires_at <= p_now
            RETURNING pair_id, is_gold
        )
        UPDATE pairs p SET claimed = p.claimed - e.n
        FROM (SELECT pair_id, COUNT(*) AS n FROM expired WHERE is_gold = 0 GROUP BY pair_id) e
        WHERE p.id = e.pair_id;
    END IF;

    -- Asking again while holding a lease returns the same pair.
    SELECT a.id, a.pair_id, a.swapped, a.expires_at INTO v_held FROM assignments a
    WHERE a.rater_id = p_rater AND a.campaign_id = c.id AND a.status = 'active' ORDER BY a.id LIMIT 1;
    IF FOUND THEN
        v_lease := v_held;
    ELSE
        -- The front of the queue: the lowest (vote_count, claimed) among open pairs. Among
        -- its pairs, all equally due, start at a random shuffle key and wrap around.
        SELECT p.vote_count, p.claimed INTO v_front FROM pairs p
        WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.claimed < c.overlap
        ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1;
        IF FOUND THEN
            v_start := floor(random() * 2147483647)::BIGINT;
            SELECT p.id INTO v_regular FROM pairs p
            WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.vote_count = v_front.vote_count
              AND p.claimed = v_front.claimed AND p.shuffle_key >= v_start
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
            ORDER BY p.shuffle_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED;
            IF v_regular IS NULL THEN
                SELECT p.id INTO v_regular FROM pairs p
                WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.vote_count = v_front.vote_count
                  AND p.claimed = v_front.claimed AND p.shuffle_key < v_start
                  AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
                ORDER BY p.shuffle_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED;
            END IF;
        END IF;
        -- Nothing there for this rater (they had those pairs, or others are claiming them): the
        -- whole queue in order, skipping pairs other transactions are claiming; if all are,
        -- wait for one (the lock grant re-checks `claimed`).
        IF v_regular IS NULL THEN
            SELECT p.id INTO v_regular FROM pairs p
            WHERE p.campaign_id = c.id AND p.is_gold = 0 AND p.claimed < c.overlap
              AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.pair_id = p.id AND a.rater_id = p_rater AND a.status <> 'expired')
            ORDER BY p.vote_count, p.claimed, p.shuffle_key LIMIT 1 FOR UPDATE OF p SKIP LOCKED;
        END IF;
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
        -- A pair handed to the same rater again keeps its assignment id and left/right order;
        -- a single response is never swapped.
        INSERT INTO assignments AS a (campaign_id, pair_id, rater_id, status, swapped, is_gold, created_at, expires_at)
        VALUES (c.id, v_pair, p_rater, 'active',
                CASE WHEN c.feedback IN ('thumbs', 'scale') THEN 0 ELSE p_swap END,
                v_is_gold, p_now, p_now + c.lease_seconds * 1000)
        ON CONFLICT (pair_id, rater_id) DO UPDATE SET status = 'active', swapped = a.swapped,
            created_at = excluded.created_at, expires_at = excluded.expires_at
        RETURNING a.id, a.pair_id, a.swapped, a.expires_at INTO v_lease;
    END IF;
    RETURN QUERY SELECT 'assigned'::TEXT, c.status, c.id, v_lease.id, v_lease.pair_id, pr.text, pr.messages, ra.text, rb.text,
                        v_lease.swapped, v_lease.expires_at
    FROM pairs p JOIN prompts pr ON pr.id = p.prompt_id JOIN responses ra ON ra.id = p.response_a_id
    LEFT JOIN responses rb ON rb.id = p.response_b_id WHERE p.id = v_lease.pair_id;
END
$$;

-- A vote went through three nested functions (this wrapper, 0008's `pairwise_vote_aspects`,
-- then `pairwise_vote`), each copying the rows of the one below and looking the new vote up
-- again by its client key. One wrapper now makes the aspect checks and the feedback checks
-- of both on one lookup of the vote and its campaign, in the same order.
CREATE OR REPLACE FUNCTION pairwise_vote_feedback(p_rater BIGINT, p_assignment BIGINT, p_pair BIGINT, p_swapped BIGINT, p_choice TEXT,
                                       p_strength BIGINT, p_rationale TEXT, p_time_ms BIGINT, p_client_key TEXT,
                                       p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT, p_aspects TEXT,
                                       p_ranked BIGINT)
RETURNS TABLE (vote_id BIGINT, vote_seq BIGINT, vote_pair_id BIGINT, vote_choice TEXT, vote_strength BIGINT,
               vote_swapped BIGINT, vote_created_at BIGINT, duplicate BIGINT, my_votes BIGINT,
               next_kind TEXT, campaign_status TEXT, campaign_id BIGINT, assignment_id BIGINT, pair_id BIGINT, prompt TEXT,
               messages TEXT, text_a TEXT, text_b TEXT, swapped BIGINT, expires_at BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v RECORD;
    v_aspects JSON;
    v_name TEXT;
    v_duplicate BOOLEAN;
BEGIN
    v_duplicate := EXISTS (SELECT 1 FROM comparisons k WHERE k.rater_id = p_rater AND k.client_key = p_client_key);
    -- RETURN QUERY adds the row and carries on: the checks below still fail the statement.
    RETURN QUERY SELECT * FROM pairwise_vote(p_rater, p_assignment, p_pair, p_swapped, p_choice, p_strength,
                                             p_rationale, p_time_ms, p_client_key, p_now, p_gold_roll, p_swap);
    IF v_duplicate THEN
        RETURN;
    END IF;
    SELECT k.id, k.campaign_id, k.pair_id, k.swapped, c.feedback, c.aspects INTO v
    FROM comparisons k JOIN campaigns c ON c.id = k.campaign_id
    WHERE k.rater_id = p_rater AND k.client_key = p_client_key;
    v_aspects := v.aspects::json;
    IF json_array_length(v_aspects) = 0 THEN
        IF p_aspects IS NOT NULL THEN
            RAISE EXCEPTION 'aspects: this campaign asks only for the overall choice' USING ERRCODE = 'PW400';
        END IF;
    ELSE
        SELECT a->>'name' INTO v_name FROM json_array_elements(v_aspects) a
        WHERE p_aspects IS NULL OR (p_aspects::json ->> (a->>'name')) IS NULL LIMIT 1;
        IF v_name IS NOT NULL THEN
            RAISE EXCEPTION 'aspects.%: missing; this campaign asks for a choice on each of its aspects', v_name
                USING ERRCODE = 'PW400';
        END IF;
        SELECT e.key INTO v_name FROM json_each_text(p_aspects::json) e
        WHERE NOT EXISTS (SELECT 1 FROM json_array_elements(v_aspects) a WHERE a->>'name' = e.key) LIMIT 1;
        IF v_name IS NOT NULL THEN
            RAISE EXCEPTION 'aspects.%: not an aspect of this campaign', v_name USING ERRCODE = 'PW400';
        END IF;
        INSERT INTO aspect_votes (comparison_id, campaign_id, pair_id, aspect, choice)
        SELECT v.id, v.campaign_id, v.pair_id, e.key, CASE e.value
            WHEN 'left' THEN CASE WHEN v.swapped = 1 THEN 'b' ELSE 'a' END
            WHEN 'right' THEN CASE WHEN v.swapped = 1 THEN 'a' ELSE 'b' END
            ELSE e.value END
        FROM json_each_text(p_aspects::json) e;
    END IF;
    IF v.feedback = 'ranking' AND p_ranked <> 1 THEN
        RAISE EXCEPTION 'ranks: required; this campaign ranks all of a task''s responses (send ranks, not choice)'
            USING ERRCODE = 'PW400';
    ELSIF v.feedback IN ('thumbs', 'scale') AND p_ranked <> 2 THEN
        RAISE EXCEPTION 'rating: required; this campaign rates one response at a time (send rating, not choice)'
            USING ERRCODE = 'PW400';
    ELSIF v.feedback = 'pair' AND p_ranked = 1 THEN
        RAISE EXCEPTION 'ranks: this campaign asks for a choice between two responses, not a ranking'
            USING ERRCODE = 'PW400';
    ELSIF v.feedback = 'pair' AND p_ranked = 2 THEN
        RAISE EXCEPTION 'rating: this campaign asks for a choice between two responses, not a rating'
            USING ERRCODE = 'PW400';
    END IF;
END
$$;

DROP FUNCTION pairwise_vote_aspects(BIGINT, BIGINT, BIGINT, BIGINT, TEXT, BIGINT, TEXT, BIGINT, TEXT, BIGINT,
                                    DOUBLE PRECISION, BIGINT, TEXT);
