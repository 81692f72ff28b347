-- Ranking campaigns: raters order all of a prompt's 2-6 responses. A task is a `pairs` row
-- (its first two responses as response_a/b), so leases, overlap, skips and the running
-- tallies work as for pairs; its full list of responses is in `ranking_responses`.

-- What raters answer: `pair` (a choice between two) or `ranking`. Checked by the server, not
-- by a CHECK: `kind`'s CHECK cannot be widened on SQLite, so ranking campaigns keep
-- kind 'pairwise' (their pairs are imported) and are told apart by this column.
ALTER TABLE campaigns ADD COLUMN feedback TEXT NOT NULL DEFAULT 'pair';

-- A ranking task's responses in import order (position 0 and 1 are response_a and _b).
CREATE TABLE ranking_responses (
    pair_id     INTEGER NOT NULL REFERENCES pairs (id),
    position    INTEGER NOT NULL,
    response_id INTEGER NOT NULL REFERENCES responses (id),
    -- A gold check's known rank of this response (competition ranks); NULL elsewhere.
    gold_rank   INTEGER,
    PRIMARY KEY (pair_id, position)
);

-- One row per response of a ranking vote: its rank (1 = best, equal ranks tie) and where the
-- rater saw it (`shown_at`, 0 = first on screen; for position bias). The vote's
-- `comparisons.choice` is the order of responses a and b it implies (both_bad: "all bad").
CREATE TABLE ranking_votes (
    comparison_id INTEGER NOT NULL REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   INTEGER NOT NULL,
    pair_id       INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    shown_at      INTEGER NOT NULL,
    rank          INTEGER NOT NULL CHECK (rank >= 1),
    PRIMARY KEY (comparison_id, position)
);
CREATE INDEX ranking_votes_by_pair ON ranking_votes (campaign_id, pair_id);
