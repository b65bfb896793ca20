-- Cells taken ahead (issue 18): one acquisition may grant a replica more
-- than the cell its request needs, from the upper half of the bucket only
-- (quarry_db::rate_limit::acquire). The statement stores how many cells it
-- granted here and returns it: PostgreSQL 16's RETURNING cannot see the
-- row as it was before the update.
ALTER TABLE quarry.rate_limits ADD COLUMN granted integer NOT NULL DEFAULT 1;
COMMENT ON COLUMN quarry.rate_limits.granted IS 'cells granted by the last acquisition of this bucket (the request''s own and those taken ahead)';
