-- The search tool's bookkeeping (was created by the tool at start-up before
-- this migration, hence IF NOT EXISTS): the version sequence, one row per
-- collection (definition hash, recorded embedder, sync progress) and the
-- change outbox that source triggers append to. The per-collection sidecar
-- tables are created by the tool (tools/search/src/ddl.rs).
CREATE SEQUENCE IF NOT EXISTS quarry.search_version;

CREATE TABLE IF NOT EXISTS quarry.search_collections (
    name                  text PRIMARY KEY,
    config_hash           text NOT NULL,
    model_id              text,
    dimension             integer,
    source_oid            oid,
    backfill_after        text,
    backfill_done         boolean NOT NULL DEFAULT false,
    backfill_from_version bigint,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE quarry.search_collections IS 'one row per search collection: definition hash, embedder (model_id, dimension) and sync progress';

CREATE TABLE IF NOT EXISTS quarry.search_outbox (
    seq         bigserial PRIMARY KEY,
    collection  text NOT NULL,
    key         text NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS search_outbox_collection_seq_idx ON quarry.search_outbox (collection, seq);
COMMENT ON TABLE quarry.search_outbox IS 'changed source keys per collection, appended by the source triggers and consumed by the syncer';
