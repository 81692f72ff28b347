-- no-transaction
-- Single-response campaigns (thumbs up/down, a 1-5 scale): a task is a `pairs` row with one
-- response, `response_b_id` NULL, so leases, overlap, skips and the running tallies work
-- as for pairs. The vote's rating is in `rating_votes`. And `training_runs` takes KTO and
-- SFT runs.
--
-- SQLite cannot drop a NOT NULL or a CHECK in place, so `pairs` is rebuilt (SQLite's
-- twelve-step procedure). Foreign keys must be off while the old table is dropped, or the
-- drop would cascade to `pair_tallies`; that pragma is a no-op inside a transaction, hence
-- `no-transaction` above and the explicit transaction here.
PRAGMA foreign_keys = OFF;
BEGIN;

CREATE TABLE pairs_rebuilt (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    prompt_id     INTEGER NOT NULL REFERENCES prompts (id),
    response_a_id INTEGER NOT NULL REFERENCES responses (id),
    -- NULL on a single-response task.
    response_b_id INTEGER REFERENCES responses (id),
    is_gold       INTEGER NOT NULL DEFAULT 0,
    gold_choice   TEXT CHECK (gold_choice IN ('a', 'b', 'tie', 'both_bad')),
    vote_count    INTEGER NOT NULL DEFAULT 0,
    -- votes + live leases; assignment never lets it exceed the campaign overlap.
    claimed       INTEGER NOT NULL DEFAULT 0,
    -- random order among equally-voted pairs, so raters do not all see import order.
    shuffle_key   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    CHECK (response_b_id IS NULL OR response_a_id <> response_b_id)
);
INSERT INTO pairs_rebuilt (id, campaign_id, prompt_id, response_a_id, response_b_id, is_gold, gold_choice, vote_count,
                           claimed, shuffle_key, created_at)
SELECT id, campaign_id, prompt_id, response_a_id, response_b_id, is_gold, gold_choice, vote_count, claimed, shuffle_key,
       created_at FROM pairs;
DROP TABLE pairs;
ALTER TABLE pairs_rebuilt RENAME TO pairs;
CREATE UNIQUE INDEX pairs_unordered_unique
    ON pairs (campaign_id, min(response_a_id, response_b_id), max(response_a_id, response_b_id));
-- The index above leaves single tasks out (its keys are NULL): one task per response.
CREATE UNIQUE INDEX pairs_single_unique ON pairs (campaign_id, response_a_id) WHERE response_b_id IS NULL;
CREATE INDEX pairs_queue ON pairs (campaign_id, is_gold, vote_count, claimed, shuffle_key);

-- One row per single-response vote: thumbs 1 (up) or 0 (down), or 1-5 on the scale. The
-- vote's `comparisons.choice` is `a` (it is about response a, the task's only one).
CREATE TABLE rating_votes (
    comparison_id INTEGER PRIMARY KEY REFERENCES comparisons (id) ON DELETE CASCADE,
    campaign_id   INTEGER NOT NULL,
    pair_id       INTEGER NOT NULL,
    rating        INTEGER NOT NULL CHECK (rating BETWEEN 0 AND 5)
);
CREATE INDEX rating_votes_by_pair ON rating_votes (campaign_id, pair_id);

-- Runs of the KTO and SFT methods (what single-response campaigns train): `training_runs`'
-- method CHECK is widened, by the same rebuild (its columns as 0003 and 0004 left them).
CREATE TABLE training_runs_rebuilt (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER NOT NULL REFERENCES campaigns (id),
    method             TEXT    NOT NULL CHECK (method IN ('reward', 'dpo', 'rlhf', 'kto', 'sft')),
    -- JSON: model, extra trainer arguments, export policy, next round.
    config             TEXT    NOT NULL,
    trigger            TEXT    NOT NULL CHECK (trigger IN ('manual', 'threshold', 'daily')),
    status             TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    -- What a running run is doing now: the trainer step (its method) or generate.
    phase              TEXT    NOT NULL DEFAULT '',
    -- The snapshot: votes with seq <= data_cursor, data_rows exported rows, SHA-256 of the file.
    data_cursor        INTEGER NOT NULL DEFAULT 0,
    data_rows          INTEGER NOT NULL DEFAULT 0,
    data_sha256        TEXT    NOT NULL DEFAULT '',
    guidelines_version INTEGER NOT NULL,
    -- JSON array of the rater ids whose votes are in the snapshot.
    raters             TEXT    NOT NULL DEFAULT '[]',
    output_dir         TEXT    NOT NULL,
    artifact_sha256    TEXT,
    exit_reason        TEXT,
    -- The campaign of new pairs the run's adapter generated (hand-off to the next round).
    next_campaign_id   INTEGER REFERENCES campaigns (id),
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    supervisor         TEXT    NOT NULL DEFAULT '',
    heartbeat_at       INTEGER NOT NULL DEFAULT 0,
    cancel_requested   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO training_runs_rebuilt (id, campaign_id, method, config, trigger, status, phase, data_cursor, data_rows,
    data_sha256, guidelines_version, raters, output_dir, artifact_sha256, exit_reason, next_campaign_id, started_at,
    finished_at, supervisor, heartbeat_at, cancel_requested)
SELECT id, campaign_id, method, config, trigger, status, phase, data_cursor, data_rows, data_sha256, guidelines_version,
    raters, output_dir, artifact_sha256, exit_reason, next_campaign_id, started_at, finished_at, supervisor,
    heartbeat_at, cancel_requested FROM training_runs;
DROP TABLE training_runs;
ALTER TABLE training_runs_rebuilt RENAME TO training_runs;
-- One run per campaign at a time, even when a schedule and a person start one together.
CREATE UNIQUE INDEX training_runs_one_running ON training_runs (campaign_id) WHERE status = 'running';

COMMIT;
PRAGMA foreign_keys = ON;
