-- Each output chunk's byte offset within its attempt's output (stdout and
-- stderr in one count, in the order stored), so a follower resumes from one
-- number. Existing chunks get theirs from the order they were stored in.
ALTER TABLE output ADD COLUMN byte_offset INTEGER NOT NULL DEFAULT 0;

UPDATE output SET byte_offset = placed.byte_offset
FROM (
    SELECT id,
           SUM(LENGTH(data)) OVER (
               PARTITION BY run_id, step_index, attempt ORDER BY id
           ) - LENGTH(data) AS byte_offset
    FROM output
) AS placed
WHERE placed.id = output.id;

CREATE INDEX output_offset ON output (run_id, step_index, attempt, byte_offset);
