-- History on disk. A run's header and each of its steps are rows of their
-- own, so a step's change rewrites that step and not the whole run; the
-- columns queries filter on (submitted_by, finished_at, labels) sit beside
-- the header. Runs, steps and leases become WITHOUT ROWID tables keyed by
-- what they are looked up by: a rowid table keyed by TEXT stores every key
-- twice (table and index).
--
-- Rows written before this migration keep their full JSON bodies (without
-- `steps`); the store reads every body with its columns laid over it, so
-- old and new rows read alike.

CREATE TABLE runs_new (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    state           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    idempotency_key TEXT,
    submitted_by    TEXT NOT NULL,
    finished_at     INTEGER,
    -- The labels as a JSON object.
    labels          TEXT NOT NULL,
    body            TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE steps (
    run_id TEXT NOT NULL,
    idx    INTEGER NOT NULL,
    state  TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

INSERT INTO steps (run_id, idx, state, body)
SELECT r.id,
       coalesce(json_extract(s.value, '$.index'), s.key),
       json_extract(s.value, '$.state'),
       s.value
FROM runs r, json_each(r.body, '$.steps') s;

INSERT INTO runs_new
    (id, name, state, created_at, idempotency_key, submitted_by, finished_at, labels, body)
SELECT id, name, state, created_at, idempotency_key,
       coalesce(json_extract(body, '$.submitted_by'), ''),
       json_extract(body, '$.finished_at'),
       coalesce(json_extract(body, '$.labels'), '{}'),
       json_remove(body, '$.steps')
FROM runs;

DROP TABLE runs;
ALTER TABLE runs_new RENAME TO runs;

-- Unique where set: a run without a key costs no index entry.
CREATE UNIQUE INDEX runs_idempotency_key ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The live set the engine loads at start: small whatever the history.
CREATE INDEX runs_live ON runs (id)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled');
-- The most recently finished runs, and pruning by age.
CREATE INDEX runs_finished ON runs (finished_at)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
-- Listing one name's runs, newest first.
CREATE INDEX runs_name ON runs (name, id);

CREATE TABLE leases_new (
    id     TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    state  TEXT NOT NULL,
    body   TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO leases_new (id, run_id, state, body) SELECT id, run_id, state, body FROM leases;
DROP TABLE leases;
ALTER TABLE leases_new RENAME TO leases;
CREATE INDEX leases_active ON leases (id) WHERE state = 'active';
CREATE INDEX leases_run ON leases (run_id);

CREATE INDEX approvals_pending ON approvals (id) WHERE state = 'pending';
CREATE INDEX approvals_run ON approvals (run_id);

-- Workers long offline or stopped are pruned by their last heartbeat.
ALTER TABLE workers ADD COLUMN last_heartbeat_at INTEGER NOT NULL DEFAULT 0;
UPDATE workers SET last_heartbeat_at = coalesce(json_extract(body, '$.last_heartbeat_at'), 0);

-- Pruning by age.
CREATE INDEX events_at ON events (at);
CREATE INDEX output_at ON output (at);
