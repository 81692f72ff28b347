-- Ranking campaigns: raters order all of a prompt's 2-6 responses. A task is a `pairs` row
-- (its first two responses as response_a/b), so leases, overlap, skips and the running
-- tallies work as for pairs; its full list of responses is in `ranking_responses`.

-- What raters answer: `pair` (a choice between two) or `ranking`. Checked by the server, not
-- by a CHECK: `kind`'s CHECK cannot be widened on SQLite, so ranking campaigns keep
-- kind 'pairwise' (their pairs are imported) and are told apart by this column.
ALTER TABLE campaigns ADD COLUMN feedback TEXT NOT NULL DEFAULT 'pair';

-- A ranking task's responses in import order (position 0 and 1 are response_a and _b).
CREATE TABLE ranking_responses (
    pair_id     BIGINT NOT NULL REFERENCES pairs (id),
    position    BIGINT NOT NULL,
    response_id BIGINT NOT NULL REFERENCES responses (id),
    -- A gold check's known rank of this response (competition ranks); NULL elsewhere.
    gold_rank   INTEGER,
    PRIMARY KEY (pair_id, position)
);

-- One row per response of a ranking vote: its rank (1 = best, equal ranks tie) and where the
-- rater saw it (`shown_at`, 0 = first on screen; for position bias). The vote's
-- `comparisons.choice` is the order of responses a and b it implies (both_bad: "all bad").
CREATE TABLE ranking_votes (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   BIGINT NOT NULL,
    pair_id       BIGINT NOT NULL,
    position      BIGINT NOT NULL,
    shown_at      BIGINT NOT NULL,
    rank          BIGINT NOT NULL CHECK (rank >= 1),
    PRIMARY KEY (comparison_id, position)
);
CREATE INDEX ranking_votes_by_pair ON ranking_votes (campaign_id, pair_id);

-- Every vote goes through this wrapper of `pairwise_vote_aspects` (0008): the vote as before,
-- then, in the same statement, a check that it answers the campaign's question. A ranking
-- vote's ranks are stored next by the server, in the same transaction (`ranking.rs`).
CREATE FUNCTION pairwise_vote_feedback(p_rater BIGINT, p_assignment BIGINT, p_pair BIGINT, p_swapped BIGINT, p_choice TEXT,
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
    IF v_feedback = 'ranking' AND p_ranked = 0 THEN
        RAISE EXCEPTION 'ranks: required; this campaign ranks all of a task''s responses (send ranks, not choice)'
            USING ERRCODE = 'PW400';
    ELSIF v_feedback <> 'ranking' AND p_ranked = 1 THEN
        RAISE EXCEPTION 'ranks: this campaign asks for a choice between two responses, not a ranking'
            USING ERRCODE = 'PW400';
    END IF;
END
$$;
