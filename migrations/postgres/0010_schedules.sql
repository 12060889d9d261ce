-- Schedules: a run spec submitted on a cron expression. The object is
-- stored whole as JSON in `body` (spec template, params, cron, time zone,
-- missed-fire and overlap policies, who made and changed it); the columns
-- beside it are what one reads at a glance. A fire rewrites the row in the
-- same transaction as the run it submits, so a fire is recorded exactly
-- once. Removing a schedule deletes its row; the event log keeps the history.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    paused       BOOLEAN NOT NULL,
    next_fire_at BIGINT,
    last_fire_at BIGINT,
    last_run_id  TEXT,
    body         TEXT NOT NULL
);
