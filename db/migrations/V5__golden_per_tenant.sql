-- Golden pairs stored with AddGoldenPair belong to the tenant that stored
-- them: they answer and teach only that tenant's questions. Pairs from the
-- golden file are shared (not stored here) and cannot be overridden.
ALTER TABLE quarry.golden_pairs ADD COLUMN tenant text;
UPDATE quarry.golden_pairs SET tenant = split_part(coalesce(created_by, ''), '/', 1);
ALTER TABLE quarry.golden_pairs ALTER COLUMN tenant SET NOT NULL;
ALTER TABLE quarry.golden_pairs DROP CONSTRAINT golden_pairs_source_question_key;
ALTER TABLE quarry.golden_pairs ADD CONSTRAINT golden_pairs_source_tenant_question_key
    UNIQUE (source, tenant, question);
COMMENT ON COLUMN quarry.golden_pairs.tenant IS 'the tenant that stored the pair; only its callers see it';
