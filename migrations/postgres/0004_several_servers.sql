-- Several servers on one database. What used to live in one process's memory moves here,
-- so that any number of `pairwise serve` processes on one Postgres database act as one.

-- Which server supervises a run and when it last said it is alive. Every server marks a
-- run whose heartbeat stopped as interrupted (its server died), and a cancel asked of a
-- server that does not supervise the run is passed on through `cancel_requested`.
ALTER TABLE training_runs ADD COLUMN supervisor TEXT NOT NULL DEFAULT '';
ALTER TABLE training_runs ADD COLUMN heartbeat_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE training_runs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;

-- Named leases: the server holding one (until it expires) does its job alone. The
-- scheduler's lease makes a schedule fire once, however many servers run.
CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);

-- Failed logins per key (`user:NAME`, `addr:IP`) in the key's current fixed window, shared
-- by every server so that the login rate limit holds across them.
CREATE TABLE login_failures (
    key          TEXT   PRIMARY KEY,
    window_start BIGINT NOT NULL,
    failures     BIGINT NOT NULL
);
