-- Notifications waiting to be delivered, delivered, or given up on: one row
-- per notifier and event, written in the same commit as the event. `id` is
-- the idempotency id receivers see ("<event seq>-<notifier>"); `payload`
-- is the JSON delivered, made when the event was.
CREATE TABLE notify_outbox (
    id         TEXT PRIMARY KEY,
    notifier   TEXT NOT NULL,
    event_seq  INTEGER NOT NULL,
    event_kind TEXT NOT NULL,
    state      TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    next_at    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    payload    TEXT NOT NULL
);
CREATE INDEX notify_outbox_due ON notify_outbox (state, next_at);
CREATE INDEX notify_outbox_updated ON notify_outbox (updated_at);
