-- A queue's `max_running`: at most this many of its leases active at
-- once; 0 is no limit. Runs' concurrency keys live in their bodies.
ALTER TABLE queues ADD COLUMN max_running BIGINT NOT NULL DEFAULT 0;
