-- Run names quarantined because their steps got stuck too often. A row
-- exists while the quarantine holds (the object stored whole as JSON in
-- `body`); clearing it deletes the row, and the event log keeps the history.
CREATE TABLE quarantines (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
