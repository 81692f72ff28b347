-- RLHF runs (reward model, then policy optimisation against it) and the hand-off to the next
-- round: a successful run may generate new pairs with its adapter into a new campaign.
-- SQLite cannot change a CHECK constraint in place, so training_runs is rebuilt; run_metrics
-- (which references it) is set aside and restored around the swap.

CREATE TABLE training_runs_v3 (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER NOT NULL REFERENCES campaigns (id),
    method             TEXT    NOT NULL CHECK (method IN ('reward', 'dpo', 'rlhf')),
    -- JSON: model, extra trainer arguments, export policy, next round.
    config             TEXT    NOT NULL,
    trigger            TEXT    NOT NULL CHECK (trigger IN ('manual', 'threshold', 'daily')),
    status             TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    -- What a running run is doing now: reward, dpo, rlhf (the trainer steps) or generate.
    phase              TEXT    NOT NULL DEFAULT '',
    -- The snapshot: votes with seq <= data_cursor, data_rows aggregated pairs, SHA-256 of the file.
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
    finished_at        INTEGER
);
INSERT INTO training_runs_v3 (id, campaign_id, method, config, trigger, status, data_cursor, data_rows, data_sha256,
    guidelines_version, raters, output_dir, artifact_sha256, exit_reason, started_at, finished_at)
SELECT id, campaign_id, method, config, trigger, status, data_cursor, data_rows, data_sha256,
    guidelines_version, raters, output_dir, artifact_sha256, exit_reason, started_at, finished_at
FROM training_runs;

CREATE TABLE run_metrics_saved AS SELECT run_id, line, metrics FROM run_metrics;
DROP TABLE run_metrics;
DROP TABLE training_runs;
ALTER TABLE training_runs_v3 RENAME TO training_runs;
-- One run per campaign at a time, even when a schedule and a person start one together.
CREATE UNIQUE INDEX training_runs_one_running ON training_runs (campaign_id) WHERE status = 'running';

CREATE TABLE run_metrics (
    run_id  INTEGER NOT NULL REFERENCES training_runs (id),
    line    INTEGER NOT NULL,
    -- One line of a trainer step's metrics.jsonl, with its `phase`.
    metrics TEXT    NOT NULL,
    PRIMARY KEY (run_id, line)
);
INSERT INTO run_metrics (run_id, line, metrics) SELECT run_id, line, metrics FROM run_metrics_saved;
DROP TABLE run_metrics_saved;

-- Lineage the other way: the run whose adapter generated a campaign's responses.
ALTER TABLE campaigns ADD COLUMN source_run_id INTEGER REFERENCES training_runs (id);
