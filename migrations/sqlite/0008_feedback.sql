-- More than one verdict per pair: per-aspect choices (an admin names the aspects, every vote
-- chooses on each besides overall) and raters' corrections of a response (a new revision
-- linked to the original, which is never overwritten).

-- [{name, description}, ...]; empty for campaigns asking only the overall question.
ALTER TABLE campaigns ADD COLUMN aspects TEXT NOT NULL DEFAULT '[]';

-- One row per aspect of a vote, the choice in the pair's stored order (like comparisons).
CREATE TABLE aspect_votes (
    comparison_id INTEGER NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   INTEGER NOT NULL,
    pair_id       INTEGER NOT NULL,
    aspect        TEXT    NOT NULL,
    choice        TEXT    NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    PRIMARY KEY (comparison_id, aspect)
);
CREATE INDEX aspect_votes_by_aspect ON aspect_votes (campaign_id, aspect, pair_id);

-- A vote's correction: `response_id` is the corrected text (a response row of the same
-- prompt), `original_response_id` the response it revises.
CREATE TABLE corrections (
    comparison_id        INTEGER PRIMARY KEY REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id          INTEGER NOT NULL,
    pair_id              INTEGER NOT NULL,
    original_response_id INTEGER NOT NULL REFERENCES responses (id),
    response_id          INTEGER NOT NULL REFERENCES responses (id),
    rater_id             INTEGER NOT NULL REFERENCES users (id),
    created_at           INTEGER NOT NULL
);
CREATE INDEX corrections_by_campaign ON corrections (campaign_id, pair_id);
