-- opsdeck's SQLite schema. Each object is stored whole as JSON in `body`;
-- the columns beside it are what queries filter and sort on.

CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
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
    paused INTEGER NOT NULL
);

-- The audit trail: append-only, one gap-free sequence. `body` is the
-- encoded opsdeck.v1.Event.
CREATE TABLE events (
    seq    INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    run_id TEXT,
    actor  TEXT NOT NULL,
    body   BLOB NOT NULL
);
CREATE INDEX events_run ON events (run_id, seq);

CREATE TABLE output (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     TEXT NOT NULL,
    step_index INTEGER NOT NULL,
    attempt    INTEGER NOT NULL,
    stream     TEXT NOT NULL,
    at         INTEGER NOT NULL,
    truncated  INTEGER NOT NULL,
    data       BLOB NOT NULL
);
CREATE INDEX output_step ON output (run_id, step_index, attempt, id);
