-- Consecutive events of one run in one commit share a row: the row holds
-- the seqs from `seq` to `last_seq`, its body their events one after the
-- other. A row of one event (all rows before this) keeps `last_seq` null
-- and its old layout.
ALTER TABLE events ADD COLUMN last_seq INTEGER;
