-- opsdeck's PostgreSQL schema: the same tables as SQLite's. Each object is
-- stored whole as JSON in `body`; the columns beside it are what queries
-- filter and sort on.

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    idempotency_key TEXT UNIQUE,
    body            TEXT NOT NULL
);
CREATE INDEX runs_state ON runs (state);

CREATE TABLE workers (
    id    TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    body  TEXT NOT NULL
);

CREATE TABLE leases (
    id     TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    body   TEXT NOT NULL
);
CREATE INDEX leases_state ON leases (state);

CREATE TABLE approvals (
    id     TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    body   TEXT NOT NULL
);

CREATE TABLE queues (
    name   TEXT PRIMARY KEY,
    paused BOOLEAN NOT NULL
);

-- The audit trail: append-only, one gap-free sequence across every engine
-- that has led. `body` is the encoded opsdeck.v1.Event.
CREATE TABLE events (
    seq    BIGINT PRIMARY KEY,
    at     BIGINT NOT NULL,
    kind   TEXT NOT NULL,
    run_id TEXT,
    actor  TEXT NOT NULL,
    body   BYTEA NOT NULL
);
CREATE INDEX events_run ON events (run_id, seq);

CREATE TABLE output (
    id         BIGSERIAL PRIMARY KEY,
    run_id     TEXT NOT NULL,
    step_index BIGINT NOT NULL,
    attempt    BIGINT NOT NULL,
    stream     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    truncated  BOOLEAN NOT NULL,
    data       BYTEA NOT NULL
);
CREATE INDEX output_step ON output (run_id, step_index, attempt, id);
