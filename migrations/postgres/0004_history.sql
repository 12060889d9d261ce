-- History on disk. A run's header and each of its steps are rows of their
-- own, so a step's change rewrites that step and not the whole run; the
-- columns queries filter on (submitted_by, finished_at, labels) sit beside
-- the header.
--
-- Rows written before this migration keep their full JSON bodies (without
-- `steps`); the store reads every body with its columns laid over it, so
-- old and new rows read alike.

CREATE TABLE steps (
    run_id TEXT NOT NULL,
    idx    BIGINT NOT NULL,
    state  TEXT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
);

INSERT INTO steps (run_id, idx, state, body)
SELECT r.id,
       coalesce((s.value ->> 'index')::BIGINT, s.n - 1),
       s.value ->> 'state',
       s.value::TEXT
FROM runs r,
     jsonb_array_elements(r.body::JSONB -> 'steps') WITH ORDINALITY AS s (value, n);

ALTER TABLE runs
    ADD COLUMN submitted_by TEXT NOT NULL DEFAULT '',
    ADD COLUMN finished_at  BIGINT,
    ADD COLUMN labels       JSONB NOT NULL DEFAULT '{}';

UPDATE runs SET
    submitted_by = coalesce(body::JSONB ->> 'submitted_by', ''),
    finished_at  = (body::JSONB ->> 'finished_at')::BIGINT,
    labels       = coalesce(body::JSONB -> 'labels', '{}'),
    body         = (body::JSONB - 'steps')::TEXT;

DROP INDEX runs_state;
-- The live set the engine loads at start: small whatever the history.
CREATE INDEX runs_live ON runs (id)
    WHERE state NOT IN ('succeeded', 'failed', 'cancelled');
-- The most recently finished runs, and pruning by age.
CREATE INDEX runs_finished ON runs (finished_at DESC NULLS LAST, id DESC)
    WHERE state IN ('succeeded', 'failed', 'cancelled');
-- Listing one name's runs, newest first.
CREATE INDEX runs_name ON runs (name, id);
-- Label filters (labels @> '{"k":"v"}').
CREATE INDEX runs_labels ON runs USING GIN (labels jsonb_path_ops);

DROP INDEX leases_state;
CREATE INDEX leases_active ON leases (id) WHERE state = 'active';
CREATE INDEX leases_run ON leases (run_id);

CREATE INDEX approvals_pending ON approvals (id) WHERE state = 'pending';
CREATE INDEX approvals_run ON approvals (run_id);

-- Workers long offline or stopped are pruned by their last heartbeat.
ALTER TABLE workers ADD COLUMN last_heartbeat_at BIGINT NOT NULL DEFAULT 0;
UPDATE workers SET last_heartbeat_at = coalesce((body::JSONB ->> 'last_heartbeat_at')::BIGINT, 0);

-- Pruning by age.
CREATE INDEX events_at ON events (at);
CREATE INDEX output_at ON output (at);
