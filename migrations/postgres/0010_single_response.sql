-- Single-response campaigns (thumbs up/down, a 1-5 scale): a task is a `pairs` row with one
-- response, `response_b_id` NULL, so leases, overlap, skips and the running tallies work
-- as for pairs. The vote's rating is in `rating_votes`.

-- Runs of the KTO and SFT methods (what single-response campaigns train).
ALTER TABLE training_runs DROP CONSTRAINT training_runs_method_check;
ALTER TABLE training_runs ADD CONSTRAINT training_runs_method_check
    CHECK (method IN ('reward', 'dpo', 'rlhf', 'kto', 'sft'));

-- The table CHECK (response_a_id <> response_b_id) holds for NULL already.
ALTER TABLE pairs ALTER COLUMN response_b_id DROP NOT NULL;
-- The unordered index leaves single tasks out (its keys are NULL): one task per response.
CREATE UNIQUE INDEX pairs_single_unique ON pairs (campaign_id, response_a_id) WHERE response_b_id IS NULL;

-- One row per single-response vote: thumbs 1 (up) or 0 (down), or 1-5 on the scale. The
-- vote's `comparisons.choice` is `a` (it is about response a, the task's only one).
CREATE TABLE rating_votes (
    comparison_id BIGINT PRIMARY KEY REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   BIGINT NOT NULL,
    pair_id       BIGINT NOT NULL,
    rating        BIGINT NOT NULL CHECK (rating BETWEEN 0 AND 5)
);
CREATE INDEX rating_votes_by_pair ON rating_votes (campaign_id, pair_id);

-- 0005's assignment, now serving tasks without a response b (LEFT JOIN) and never swapping
-- a single response.
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

-- 0009's check that a vote answers its campaign's question, now with ratings: `p_ranked` is
-- 0 for a choice, 1 for ranks, 2 for a rating (stored next by the server, in the same
-- transaction: `rating.rs`).
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
    v_feedback TEXT;
    v_duplicate BOOLEAN;
BEGIN
    v_duplicate := EXISTS (SELECT 1 FROM comparisons k WHERE k.rater_id = p_rater AND k.client_key = p_client_key);
    RETURN QUERY SELECT * FROM pairwise_vote_aspects(p_rater, p_assignment, p_pair, p_swapped, p_choice, p_strength,
                                                     p_rationale, p_time_ms, p_client_key, p_now, p_gold_roll, p_swap,
                                                     p_aspects);
    IF v_duplicate THEN
        RETURN;
    END IF;
    SELECT c.feedback INTO v_feedback FROM comparisons k JOIN campaigns c ON c.id = k.campaign_id
    WHERE k.rater_id = p_rater AND k.client_key = p_client_key;
    IF v_feedback = 'ranking' AND p_ranked <> 1 THEN
        RAISE EXCEPTION 'ranks: required; this campaign ranks all of a task''s responses (send ranks, not choice)'
            USING ERRCODE = 'PW400';
    ELSIF v_feedback IN ('thumbs', 'scale') AND p_ranked <> 2 THEN
        RAISE EXCEPTION 'rating: required; this campaign rates one response at a time (send rating, not choice)'
            USING ERRCODE = 'PW400';
    ELSIF v_feedback = 'pair' AND p_ranked = 1 THEN
        RAISE EXCEPTION 'ranks: this campaign asks for a choice between two responses, not a ranking'
            USING ERRCODE = 'PW400';
    ELSIF v_feedback = 'pair' AND p_ranked = 2 THEN
        RAISE EXCEPTION 'rating: this campaign asks for a choice between two responses, not a rating'
            USING ERRCODE = 'PW400';
    END IF;
END
$$;
