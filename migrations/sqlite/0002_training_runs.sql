-- Training runs the server starts (by hand or on a schedule) as `pairwise-train` child
-- processes, with the data snapshot they trained on (lineage) and their streamed metrics.
CREATE TABLE training_runs (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER NOT NULL REFERENCES campaigns (id),
    method             TEXT    NOT NULL CHECK (method IN ('reward', 'dpo')),
    -- JSON: model, extra trainer arguments, export policy.
    config             TEXT    NOT NULL,
    trigger            TEXT    NOT NULL CHECK (trigger IN ('manual', 'threshold', 'daily')),
    status             TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
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
    started_at         INTEGER NOT NULL,
    finished_at        INTEGER
);
-- One run per campaign at a time, even when a schedule and a person start one together.
CREATE UNIQUE INDEX training_runs_one_running ON training_runs (campaign_id) WHERE status = 'running';

CREATE TABLE run_metrics (
    run_id  INTEGER NOT NULL REFERENCES training_runs (id),
    line    INTEGER NOT NULL,
    -- One line of the trainer's metrics.jsonl.
    metrics TEXT    NOT NULL,
    PRIMARY KEY (run_id, line)
);
