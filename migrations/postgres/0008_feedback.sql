-- More than one verdict per pair: per-aspect choices (an admin names the aspects, every vote
-- chooses on each besides overall) and raters' corrections of a response (a new revision
-- linked to the original, which is never overwritten).

-- [{name, description}, ...]; empty for campaigns asking only the overall question.
ALTER TABLE campaigns ADD COLUMN aspects TEXT NOT NULL DEFAULT '[]';

-- One row per aspect of a vote, the choice in the pair's stored order (like comparisons).
CREATE TABLE aspect_votes (
    comparison_id BIGINT NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   BIGINT NOT NULL,
    pair_id       BIGINT NOT NULL,
    aspect        TEXT    NOT NULL,
    choice        TEXT    NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    PRIMARY KEY (comparison_id, aspect)
);
CREATE INDEX aspect_votes_by_aspect ON aspect_votes (campaign_id, aspect, pair_id);

-- A vote's correction: `response_id` is the corrected text (a response row of the same
-- prompt), `original_response_id` the response it revises.
CREATE TABLE corrections (
    comparison_id        BIGINT PRIMARY KEY REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id          BIGINT NOT NULL,
    pair_id              BIGINT NOT NULL,
    original_response_id BIGINT NOT NULL REFERENCES responses (id),
    response_id          BIGINT NOT NULL REFERENCES responses (id),
    rater_id             BIGINT NOT NULL REFERENCES users (id),
    created_at           BIGINT NOT NULL
);
CREATE INDEX corrections_by_campaign ON corrections (campaign_id, pair_id);

-- Every vote goes through this wrapper of `pairwise_vote` (0005): the vote as before, then, in
-- the same statement (so a refusal stores nothing), the campaign's aspects checked and
-- stored. A resubmission of a stored vote keeps what its first copy stored.
CREATE FUNCTION pairwise_vote_aspects(p_rater BIGINT, p_assignment BIGINT, p_pair BIGINT, p_swapped BIGINT, p_choice TEXT,
                                      p_strength BIGINT, p_rationale TEXT, p_time_ms BIGINT, p_client_key TEXT,
                                      p_now BIGINT, p_gold_roll DOUBLE PRECISION, p_swap BIGINT, p_aspects TEXT)
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
BEGIN
    IF EXISTS (SELECT 1 FROM comparisons k WHERE k.rater_id = p_rater AND k.client_key = p_client_key) THEN
        RETURN QUERY SELECT * FROM pairwise_vote(p_rater, p_assignment, p_pair, p_swapped, p_choice, p_strength,
                                                 p_rationale, p_time_ms, p_client_key, p_now, p_gold_roll, p_swap);
        RETURN;
    END IF;
    -- RETURN QUERY adds the row and carries on: the checks below still fail the statement.
    RETURN QUERY SELECT * FROM pairwise_vote(p_rater, p_assignment, p_pair, p_swapped, p_choice, p_strength,
                                             p_rationale, p_time_ms, p_client_key, p_now, p_gold_roll, p_swap);
    SELECT k.id, k.campaign_id, k.pair_id, k.swapped INTO v FROM comparisons k
    WHERE k.rater_id = p_rater AND k.client_key = p_client_key;
    SELECT c.aspects::json INTO v_aspects FROM campaigns c WHERE c.id = v.campaign_id;
    IF json_array_length(v_aspects) = 0 THEN
        IF p_aspects IS NOT NULL THEN
            RAISE EXCEPTION 'aspects: this campaign asks only for the overall choice' USING ERRCODE = 'PW400';
        END IF;
        RETURN;
    END IF;
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
END
$$;
