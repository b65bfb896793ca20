-- Prompt tokens the model servers served from their prompt cache (OpenAI's
-- usage.prompt_tokens_details.cached_tokens), per tenant and UTC day; part
-- of prompt_tokens, not added to it.
ALTER TABLE quarry.usage_daily
    ADD COLUMN cached_prompt_tokens bigint NOT NULL DEFAULT 0;
