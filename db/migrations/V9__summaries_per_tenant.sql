-- Summaries per tenant: a kind that declares `tenants` is built once per
-- tenant its query lists, each time under that tenant's row-level security,
-- and only that tenant's callers read those rows. Rows of shared kinds (no
-- `tenants`) have tenant '' and serve every tenant the role allows.
ALTER TABLE quarry.summaries ADD COLUMN tenant text NOT NULL DEFAULT '';
ALTER TABLE quarry.summaries DROP CONSTRAINT summaries_pkey;
ALTER TABLE quarry.summaries ADD CONSTRAINT summaries_pkey PRIMARY KEY (kind, tenant, entity_key);
DROP INDEX IF EXISTS quarry.summaries_name_folded_idx;
CREATE INDEX summaries_name_folded_idx ON quarry.summaries (kind, tenant, name_folded);
COMMENT ON COLUMN quarry.summaries.tenant IS 'the tenant whose rows the summary was computed from and who alone reads it; '''' for a shared kind';
COMMENT ON TABLE quarry.summaries IS 'one summary per (kind, tenant, entity): paragraph, facts, data version (inputs hash) and an embedding of the text (no fixed dimension; searches filter on embedder); tenant '''' is shared';
