-- Arena campaigns: raters type their own prompts and two contenders (OpenAI-compatible
-- endpoints) answer them live. A battle lives in `battles` until it is voted on; only then
-- does it become an ordinary prompt, two responses, a pair and a vote, in one transaction,
-- so a battle whose contender failed or that nobody voted on leaves no pair behind.

ALTER TABLE campaigns ADD COLUMN kind TEXT NOT NULL DEFAULT 'pairwise' CHECK (kind IN ('pairwise', 'arena'));
-- The arena settings as JSON (pairing, prompt pool, limits, sampling).
ALTER TABLE campaigns ADD COLUMN arena TEXT NOT NULL DEFAULT '{}';

CREATE TABLE contenders (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    name          TEXT    NOT NULL,
    base_url      TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    -- Sent to the endpoint only; never returned by the API.
    api_key       TEXT,
    active        INTEGER NOT NULL DEFAULT 1,
    source_run_id INTEGER REFERENCES training_runs (id),
    created_at    INTEGER NOT NULL,
    UNIQUE (campaign_id, name)
);

CREATE TABLE battles (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER NOT NULL REFERENCES campaigns (id),
    rater_id           INTEGER NOT NULL REFERENCES users (id),
    left_contender_id  INTEGER NOT NULL REFERENCES contenders (id),
    right_contender_id INTEGER NOT NULL REFERENCES contenders (id),
    status             TEXT    NOT NULL CHECK (status IN ('generating', 'ready', 'failed', 'voted', 'abandoned')),
    -- [{prompt, left, right}, ...]: every exchange so far, answers as the contenders gave them.
    turns              TEXT    NOT NULL,
    -- Per side: what the endpoint reported (finish reason, latency) for the latest turn.
    left_meta          TEXT    NOT NULL DEFAULT '{}',
    right_meta         TEXT    NOT NULL DEFAULT '{}',
    error              TEXT,
    pair_id            INTEGER REFERENCES pairs (id),
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
-- The rater's latest battle, and their battles of the last minute (the rate limit).
CREATE INDEX battles_by_rater ON battles (rater_id, campaign_id, updated_at);
