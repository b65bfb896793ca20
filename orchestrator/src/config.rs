//! Orchestrator settings.

use serde::Deserialize;

/// Limits and sizes of one `Ask`. All fields have defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Model calls per question before the answer is cut off with
    /// `ANSWER_STATUS_LIMIT_REACHED`. Default 6.
    pub max_steps: u32,
    /// Tokens per question (prompt plus completion, summed over the model
    /// steps from the usage the model reports), checked after each step that
    /// asks for tools: over it, the work stops with
    /// `ANSWER_STATUS_LIMIT_REACHED` and a note giving the tokens used. A
    /// step that answers is kept whatever it cost. A model that reports no
    /// usage is not limited. `0` means no limit. Default 50 000.
    pub max_tokens: u64,
    /// Wall-time budget per question, in seconds, model and tools included;
    /// when it runs out the work in flight is dropped and the answer ends
    /// with `ANSWER_STATUS_LIMIT_REACHED` and a note naming the deadline.
    /// Default 60.
    pub deadline_secs: u64,
    /// Rows of each tool result streamed to the client when the request does
    /// not say. Default 10.
    pub preview_rows: u32,
    /// Upper bound on a request's `preview_rows`. Default 100.
    pub max_preview_rows: u32,
    /// Rows of each SQL result shown to the model. Default 50.
    pub model_rows: u32,
    /// Characters per cell shown to the model or in a table. Default 200.
    pub max_cell_chars: usize,
    /// Capacity of the per-request event channel; a slow client makes the
    /// producer wait once this many events are queued (backpressure). Default 32.
    pub event_buffer: usize,
    /// Days a conversation is kept after its last turn; older ones are
    /// invisible at once and deleted by the hourly purge. 0 keeps them
    /// forever. Default 30.
    pub conversation_retention_days: u32,
    /// Earlier turns of a conversation a follow-up is read with (the most
    /// recent ones; each turn's question, answer and SQL). Default 6.
    pub conversation_turns: u32,
    /// In router mode, ask the routing model (`[models.routing]`, else
    /// `[model]`) once which pipelines answer a question that matches no
    /// golden pair, falling back to the rules when its reply is unusable.
    /// `false` keeps router mode deterministic (rules only) even with a
    /// model configured. Without a model it has no effect. Default true.
    pub route_with_model: bool,
    /// Asks one tenant may have in flight at once; one more is refused with
    /// `RESOURCE_EXHAUSTED` and `RetryInfo` after `tenant_wait_ms`. Default 8.
    pub max_asks_per_tenant: usize,
    /// Agentic tool calls one tenant may have running at once, over all its
    /// Asks; a call past it waits `tenant_wait_ms`, then fails with an error
    /// result the model is shown. Default 8.
    pub max_tool_calls_per_tenant: usize,
    /// Tool calls run per model step; the model's further calls of that
    /// step get an error result instead of running. Default 8.
    pub max_tool_calls_per_step: usize,
    /// Tool calls run per Ask over all its steps; past it calls get an
    /// error result. Default 24.
    pub max_tool_calls_per_ask: usize,
    /// How long an Ask or a tool call waits for a slot of its tenant's share,
    /// in milliseconds. Default 250.
    pub tenant_wait_ms: u64,
    /// Bound on the schema context of agentic mode, in estimated tokens
    /// (four characters a token): the tables and columns schema linking
    /// chooses for the question, then a one-line catalogue of the caller's
    /// other tables when it fits; the model looks up more with
    /// `describe_tables`. A linked table whose full line (with comments)
    /// is over what is left goes in without comments. Default 200
    /// (≈ 800 bytes): issue 16's target is a prompt no larger than the
    /// leanest Python SQL agent's for the same question (LangGraph's, 2.9 and
    /// 3.2 KB for the two calls of a simple count on the Tate demo), of
    /// which Quarry's rules and two tool specs take ≈ 2 KB. Measured with
    /// `quarry eval tokens` on Tate's 31 demo questions: 200 gives 2.8 and
    /// 3.2 KB for that count at table recall 0.94 (the model looks up the
    /// rest with `describe_tables`); 250 gave 3.0 and 3.4 KB at 0.96,
    /// 150 2.6 and 3.0 KB at 0.92.
    /// 0 sends the caller's whole compact schema (the behaviour before
    /// issue 16).
    pub schema_context_tokens: usize,
    /// Bound on the earlier turns of a conversation shown to the model, in
    /// estimated tokens: the most recent turns that fit go in, older ones
    /// are left out, and an answer longer than a quarter of the budget is
    /// cut (its SQL kept). Default 1 500 (six turns of a short answer and
    /// its SQL each). 0 means no bound.
    pub history_tokens: usize,
    /// Bound on one tool result shown to the model, in estimated tokens:
    /// rows past it are left out (the result's digest, which covers every
    /// row, still goes in). Default 2 000. 0 means no bound beyond
    /// `model_rows`.
    pub tool_result_tokens: usize,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_steps: 6,
            max_tokens: 50_000,
            deadline_secs: 60,
            preview_rows: 10,
            max_preview_rows: 100,
            model_rows: 50,
            max_cell_chars: 200,
            event_buffer: 32,
            conversation_retention_days: 30,
            conversation_turns: 6,
            route_with_model: true,
            max_asks_per_tenant: 8,
            max_tool_calls_per_tenant: 8,
            max_tool_calls_per_step: 8,
            max_tool_calls_per_ask: 24,
            tenant_wait_ms: 250,
            schema_context_tokens: 200,
            history_tokens: 1_500,
            tool_result_tokens: 2_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OrchestratorConfig;

    #[test]
    fn keys_left_out_keep_their_defaults() {
        let config: OrchestratorConfig = serde_json::from_str(r#"{"max_steps": 3}"#).unwrap();
        assert_eq!(config.max_steps, 3);
        assert_eq!(config.max_tokens, 50_000);
        assert_eq!(config.deadline_secs, 60);
        let config: OrchestratorConfig = serde_json::from_str(r#"{"max_tokens": 0}"#).unwrap();
        assert_eq!(config.max_tokens, 0, "0 means no limit");
        assert!(serde_json::from_str::<OrchestratorConfig>(r#"{"max_token": 1}"#).is_err());
    }
}
