-- The summaries tool's tables (were created by the tool at start-up before
-- this migration, hence IF NOT EXISTS): one row per (kind, entity) with its
-- paragraph, facts, data version and embedding, and one row per build.
CREATE TABLE IF NOT EXISTS quarry.summaries (
    kind         text NOT NULL,
    entity_key   text NOT NULL,
    entity_name  text NOT NULL,
    name_folded  text NOT NULL,
    weight       float8,
    text         text NOT NULL,
    facts        jsonb NOT NULL,
    data_version text NOT NULL,
    embedder     text,
    embedding    vector,
    computed_at  timestamptz NOT NULL,
    checked_at   timestamptz NOT NULL,
    last_error   text,
    PRIMARY KEY (kind, entity_key)
);
CREATE INDEX IF NOT EXISTS summaries_entity_key_idx ON quarry.summaries (entity_key);
CREATE INDEX IF NOT EXISTS summaries_name_folded_idx ON quarry.summaries (kind, name_folded);
CREATE INDEX IF NOT EXISTS summaries_text_fts_idx ON quarry.summaries
    USING gin (to_tsvector('english', text));
COMMENT ON TABLE quarry.summaries IS 'one summary per (kind, entity): paragraph, facts, data version (inputs hash) and an embedding of the text (no fixed dimension; searches filter on embedder)';

CREATE TABLE IF NOT EXISTS quarry.summary_builds (
    id          bigserial PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    trigger     text NOT NULL,
    report      jsonb NOT NULL
);
COMMENT ON TABLE quarry.summary_builds IS 'one row per summary build with its report as JSON; the newest 1000 are kept';
