-- Every statement Quarry executes for a caller, and every refusal, with who
-- asked (tenant, subject, request id), what ran and how it ended. Purged
-- after the configured retention.
CREATE TABLE quarry.audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    tenant      text NOT NULL,
    subject     text NOT NULL,
    request_id  text NOT NULL,
    tool        text NOT NULL,
    action      text NOT NULL,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'error', 'refused')),
    sql         text,
    rows        bigint,
    bytes       bigint,
    duration_ms double precision,
    detail      text
);
CREATE INDEX audit_log_tenant_at_idx ON quarry.audit_log (tenant, at DESC);
CREATE INDEX audit_log_at_idx ON quarry.audit_log (at);
COMMENT ON TABLE quarry.audit_log IS 'statements executed and refusals, per tenant; see quarry_db::audit';
