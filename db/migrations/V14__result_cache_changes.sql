-- Change notices for the result cache (issue 18 item 2): a statement-level
-- trigger on each source table the cache covers calls this function after
-- every INSERT, UPDATE, DELETE or TRUNCATE; it sends the table's OID on the
-- channel `quarry_table_changed`. PostgreSQL delivers a NOTIFY only when the
-- writing transaction commits, and then to every listening session (docs
-- §"NOTIFY"), so each Quarry replica's cache hears of every committed change
-- to a table it serves results of. A rolled-back write sends nothing.
-- quarry_sql::cache installs the triggers (`quarry_cache_changed`) on the
-- source's tables; this function only announces, it writes nothing.
CREATE FUNCTION quarry.cache_table_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quarry_table_changed', TG_RELID::text);
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION quarry.cache_table_changed() IS 'statement-level trigger: NOTIFY quarry_table_changed with the table OID, for the result cache';
