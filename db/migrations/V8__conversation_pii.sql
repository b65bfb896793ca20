-- The personal data a turn's model calls saw as placeholders: each value
-- the request's pseudonymizer replaced that the stored question, answer or
-- SQL holds (in clear or as its placeholder), as
-- [{"placeholder": "<NAME_1>", "value": "..."}]. A follow-up seeds its own
-- pseudonymizer with them, so that the earlier turns it sends to a model
-- carry placeholders too. Never returned by GetConversation; deleted with
-- the turn. Turns stored before this migration have none.
ALTER TABLE quarry.conversation_turns ADD COLUMN pii jsonb NOT NULL DEFAULT '[]';
COMMENT ON COLUMN quarry.conversation_turns.pii IS 'values the turn pseudonymised for its model calls, [{placeholder, value}]; seeds a follow-up''s pseudonymizer (quarry_llm::pii::Pseudonymizer::seed)';
