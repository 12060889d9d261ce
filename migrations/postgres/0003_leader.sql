-- Leadership among the engines sharing this database: one row. An engine
-- leads while `expires_at` (the database's clock) is in the future and it
-- renews it; taking the lead over raises `epoch`, and every commit of a
-- leader first checks, under a share lock on this row, that the epoch is
-- still its own, so a deposed leader can no longer write.
CREATE TABLE leader (
    id         INT PRIMARY KEY CHECK (id = 1),
    epoch      BIGINT NOT NULL,
    -- Who leads (its advertised address) and where clients reach it.
    holder     TEXT NOT NULL,
    address    TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
INSERT INTO leader (id, epoch, holder, address, expires_at) VALUES (1, 0, '', '', '-infinity');
