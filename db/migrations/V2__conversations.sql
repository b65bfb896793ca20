-- Conversations of the Assistant: one row per conversation, one per turn
-- (question, route, tool calls, the SQL that ran, answer, citations, usage).
-- A conversation belongs to one principal (tenant and subject); retention
-- (`orchestrator.conversation_retention_days`) counts from `updated_at`.
CREATE TABLE quarry.conversations (
    id         uuid PRIMARY KEY,
    tenant     text NOT NULL,
    subject    text NOT NULL,
    title      text NOT NULL,
    turn_count integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_owner_recent
    ON quarry.conversations (tenant, subject, updated_at DESC, id DESC);
CREATE INDEX conversations_updated ON quarry.conversations (updated_at);
COMMENT ON TABLE quarry.conversations IS 'Assistant conversations, owned by tenant + subject; title = the first question';

CREATE TABLE quarry.conversation_turns (
    conversation_id   uuid NOT NULL REFERENCES quarry.conversations (id) ON DELETE CASCADE,
    turn              integer NOT NULL,
    request_id        text NOT NULL,
    question          text NOT NULL,
    mode              text NOT NULL,
    route             text NOT NULL,
    tool_calls        jsonb NOT NULL,
    sql               text,
    answer            text NOT NULL,
    status            text NOT NULL,
    citations         jsonb NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cost_usd          double precision,
    elapsed_ms        bigint NOT NULL,
    usage             bytea NOT NULL,
    asked_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (conversation_id, turn)
);
COMMENT ON TABLE quarry.conversation_turns IS 'one Ask each: tool_calls and citations as JSON, sql = the last SQL that ran, usage = the quarry.v1.Usage message (protobuf), cost_usd null when unknown';
