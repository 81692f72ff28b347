-- Running tallies of each campaign's votes, so that stats and the leaderboard read a few
-- rows per pair, rater, model pair or hour instead of every vote: at 5,000,000 votes they
-- cost what they cost at 5,000. Votes are folded in by sequence number, each exactly once
-- (server/src/tallies.rs): up to `campaign_tallies.tallied_seq`, when stats or the
-- leaderboard are asked for and on every server's supervisor beat, never in the vote's own
-- transaction (which stays as short as it was). (0005 is Postgres only: its vote functions.)

CREATE TABLE campaign_tallies (
    campaign_id BIGINT PRIMARY KEY REFERENCES campaigns (id) ON DELETE CASCADE,
    -- Every vote with seq <= tallied_seq is in the tables below, and no other.
    tallied_seq BIGINT NOT NULL
);

-- Choices per regular (non-gold) pair: inter-rater agreement and Krippendorff's alpha.
CREATE TABLE pair_tallies (
    pair_id     BIGINT PRIMARY KEY REFERENCES pairs (id) ON DELETE CASCADE,
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    votes       BIGINT NOT NULL,
    a           BIGINT NOT NULL,
    b           BIGINT NOT NULL,
    tie         BIGINT NOT NULL,
    both_bad    BIGINT NOT NULL
);
CREATE INDEX pair_tallies_by_campaign ON pair_tallies (campaign_id, votes);

-- Per rater: votes (gold included), gold answers, decisive regular votes and how many went
-- to the left response (position bias), and agreement with the other raters of the same
-- pairs (`compared` rater pairs, `matches` of them with the same choice).
CREATE TABLE rater_tallies (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    rater_id     BIGINT NOT NULL REFERENCES users (id),
    votes        BIGINT NOT NULL,
    gold_votes   BIGINT NOT NULL,
    gold_correct BIGINT NOT NULL,
    decisive     BIGINT NOT NULL,
    left_wins    BIGINT NOT NULL,
    compared     BIGINT NOT NULL,
    matches      BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, rater_id)
);

-- Time per vote in 100 ms steps per rater: medians without reading every vote.
CREATE TABLE vote_times (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    rater_id    BIGINT NOT NULL REFERENCES users (id),
    -- time_ms rounded to the nearest 100 ms, in units of 100 ms.
    tenths      BIGINT NOT NULL,
    votes       BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, rater_id, tenths)
);

-- Votes per hour (Unix ms of the hour's start): the votes-over-time chart.
CREATE TABLE vote_hours (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    hour        BIGINT NOT NULL,
    votes       BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, hour)
);

-- Choices between two models (keys `model@version`, as the leaderboard names them) over
-- regular pairs: the Bradley-Terry fit's input.
CREATE TABLE model_matchups (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id) ON DELETE CASCADE,
    model_a     TEXT   NOT NULL,
    model_b     TEXT   NOT NULL,
    choice      TEXT   NOT NULL,
    votes       BIGINT NOT NULL,
    PRIMARY KEY (campaign_id, model_a, model_b, choice)
);
