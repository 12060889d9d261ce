-- A parameterised run's spec text, in a column of its own: written when
-- the run is made and never again, whatever else of the run changes.
ALTER TABLE runs ADD COLUMN template TEXT;
