//! Orchestrator settings.

use serde::Deserialize;

/// Limits and sizes of one `Ask`. All fields have defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Model calls per question before the answer is cut off with
    /// `ANSWER_STATUS_LIMIT_REACHED`. Default 6.
    pub max_steps: u32,
    /// Wall-time budget per question, in seconds, model and tools included.
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
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            max_steps: 6,
            deadline_secs: 60,
            preview_rows: 10,
            max_preview_rows: 100,
            model_rows: 50,
            max_cell_chars: 200,
            event_buffer: 32,
        }
    }
}
