-- Pairwise schema, SQLite flavour. Timestamps are Unix milliseconds (INTEGER) and JSON is
-- stored as TEXT so the same queries run unchanged on Postgres through sqlx's Any driver.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'annotator')),
    active        INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL
);

-- Server-side sessions: the cookie carries a random token, only its SHA-256 is stored.
CREATE TABLE sessions (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    prefix     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE campaigns (
    id                 INTEGER PRIMARY KEY,
    name               TEXT    NOT NULL UNIQUE,
    guidelines         TEXT    NOT NULL DEFAULT '',
    guidelines_version INTEGER NOT NULL DEFAULT 1,
    overlap            INTEGER NOT NULL CHECK (overlap >= 1),
    status             TEXT    NOT NULL CHECK (status IN ('draft', 'active', 'paused', 'closed')),
    gold_rate          REAL    NOT NULL DEFAULT 0 CHECK (gold_rate >= 0 AND gold_rate <= 1),
    lease_seconds      INTEGER NOT NULL DEFAULT 600 CHECK (lease_seconds > 0),
    free_votes         INTEGER NOT NULL DEFAULT 0,
    -- Incremented under the campaign row lock by every vote: gives votes a gap-free,
    -- commit-ordered sequence number that export `since` cursors rely on.
    vote_seq           INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

-- Prompts and responses are content-addressed so re-importing the same text reuses rows.
CREATE TABLE prompts (
    id           INTEGER PRIMARY KEY,
    content_hash TEXT    NOT NULL UNIQUE,
    text         TEXT    NOT NULL,
    messages     TEXT    NOT NULL DEFAULT '[]',
    metadata     TEXT    NOT NULL DEFAULT '{}',
    created_at   INTEGER NOT NULL
);

CREATE TABLE responses (
    id            INTEGER PRIMARY KEY,
    prompt_id     INTEGER NOT NULL REFERENCES prompts (id),
    content_hash  TEXT    NOT NULL,
    text          TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    model_version TEXT,
    params        TEXT    NOT NULL DEFAULT '{}',
    created_at    INTEGER NOT NULL,
    UNIQUE (prompt_id, content_hash)
);

CREATE TABLE pairs (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    prompt_id     INTEGER NOT NULL REFERENCES prompts (id),
    response_a_id INTEGER NOT NULL REFERENCES responses (id),
    response_b_id INTEGER NOT NULL REFERENCES responses (id),
    is_gold       INTEGER NOT NULL DEFAULT 0,
    gold_choice   TEXT CHECK (gold_choice IN ('a', 'b', 'tie', 'both_bad')),
    vote_count    INTEGER NOT NULL DEFAULT 0,
    -- votes + live leases; assignment never lets it exceed the campaign overlap.
    claimed       INTEGER NOT NULL DEFAULT 0,
    -- random order among equally-voted pairs, so raters do not all see import order.
    shuffle_key   INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    CHECK (response_a_id <> response_b_id)
);
CREATE UNIQUE INDEX pairs_unordered_unique
    ON pairs (campaign_id, min(response_a_id, response_b_id), max(response_a_id, response_b_id));
CREATE INDEX pairs_queue ON pairs (campaign_id, is_gold, vote_count, claimed, shuffle_key);

-- One row per (pair, rater) ever handed out; status moves active -> voted | expired | skipped.
CREATE TABLE assignments (
    id          INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    pair_id     INTEGER NOT NULL REFERENCES pairs (id),
    rater_id    INTEGER NOT NULL REFERENCES users (id),
    status      TEXT    NOT NULL CHECK (status IN ('active', 'voted', 'expired', 'skipped')),
    swapped     INTEGER NOT NULL,
    is_gold     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    UNIQUE (pair_id, rater_id)
);
CREATE INDEX assignments_expiry ON assignments (campaign_id, status, expires_at);
CREATE INDEX assignments_by_rater ON assignments (rater_id, campaign_id, status);

CREATE TABLE comparisons (
    id            INTEGER PRIMARY KEY,
    campaign_id   INTEGER NOT NULL REFERENCES campaigns (id),
    -- Set last in the vote transaction, under the campaign row lock (see assign.rs).
    seq           INTEGER,
    pair_id       INTEGER NOT NULL REFERENCES pairs (id),
    rater_id      INTEGER NOT NULL REFERENCES users (id),
    assignment_id INTEGER REFERENCES assignments (id),
    choice        TEXT    NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    strength      INTEGER CHECK (strength BETWEEN 1 AND 3),
    rationale     TEXT,
    time_ms       INTEGER,
    swapped       INTEGER NOT NULL,
    client_key    TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (rater_id, client_key),
    UNIQUE (pair_id, rater_id),
    UNIQUE (campaign_id, seq)
);
CREATE INDEX comparisons_by_pair ON comparisons (campaign_id, pair_id);
CREATE INDEX comparisons_by_rater ON comparisons (rater_id, campaign_id);
-- A rater holds at most one live lease per campaign, even under concurrent requests.
CREATE UNIQUE INDEX assignments_one_active ON assignments (rater_id, campaign_id) WHERE status = 'active';

-- Votes per rater and campaign, kept by the vote transaction so the rater's progress
-- comes back with every vote at constant cost.
CREATE TABLE rater_progress (
    rater_id    INTEGER NOT NULL REFERENCES users (id),
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    votes       INTEGER NOT NULL,
    PRIMARY KEY (rater_id, campaign_id)
);
