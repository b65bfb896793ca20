-- Quarry's own schema: the schema catalog (with embeddings and column
-- statistics) and golden question/SQL pairs. Applied by `quarry migrate`.
CREATE SCHEMA IF NOT EXISTS quarry;
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE quarry.catalog_state (
    source          text PRIMARY KEY,
    schemas         text[] NOT NULL,
    catalog_hash    text NOT NULL,
    embedding_model text,
    refreshed_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE quarry.catalog_state IS 'one row per data source: the catalog hash the stored catalog was built from (stale when the live hash differs)';

CREATE TABLE quarry.catalog_tables (
    source         text NOT NULL REFERENCES quarry.catalog_state (source) ON DELETE CASCADE,
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    kind           text NOT NULL,
    comment        text,
    estimated_rows bigint,
    info           jsonb NOT NULL,
    embedding      vector,
    PRIMARY KEY (source, schema_name, table_name)
);
COMMENT ON TABLE quarry.catalog_tables IS 'tables and views of the source schemas; info holds columns and keys; embedding describes the table for schema linking';

CREATE TABLE quarry.catalog_columns (
    source           text NOT NULL,
    schema_name      text NOT NULL,
    table_name       text NOT NULL,
    column_name      text NOT NULL,
    ordinal          integer NOT NULL,
    data_type        text NOT NULL,
    comment          text,
    null_frac        real,
    n_distinct       real,
    most_common_vals text[],
    embedding        vector,
    PRIMARY KEY (source, schema_name, table_name, column_name),
    FOREIGN KEY (source, schema_name, table_name)
        REFERENCES quarry.catalog_tables (source, schema_name, table_name) ON DELETE CASCADE
);
COMMENT ON TABLE quarry.catalog_columns IS 'columns with pg_stats figures (null fraction, distinct count, most common values of low-cardinality text columns) and an embedding';

CREATE TABLE quarry.golden_pairs (
    id         bigserial PRIMARY KEY,
    source     text NOT NULL DEFAULT 'default',
    question   text NOT NULL,
    sql        text NOT NULL,
    row_count  bigint NOT NULL,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, question)
);
COMMENT ON TABLE quarry.golden_pairs IS 'question/SQL pairs stored with AddGoldenPair after their SQL validated and returned rows';
