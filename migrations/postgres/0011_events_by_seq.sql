-- Events are pruned in `seq` order, oldest first, stopping at the first
-- one inside the retention window (`at` grows with `seq`: the engine's one
-- core stamps them in order). The index on `at` that pruning used cost an
-- index entry for every event written, on the hottest table: it goes.
DROP INDEX IF EXISTS events_at;
