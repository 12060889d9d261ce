-- Idempotency keys are each submitter's own: the same key from two
-- identities names two runs.
ALTER TABLE runs DROP CONSTRAINT IF EXISTS runs_idempotency_key_key;
CREATE UNIQUE INDEX runs_idempotency_key ON runs (submitted_by, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
