//! Usage accounting of one `Ask`: tokens and cost per model call, the
//! request's totals, and the time spent in tool calls and the database.
//!
//! The last event of an `Ask`, `usage`, accounts for the request: tokens,
//! tool calls and wall time, and one `ModelCallUsage` per model call (each
//! agentic step, router mode's routing call, the SQL tool's generation and
//! judge calls) with its task, model, tokens (prompt tokens the provider
//! served from its prompt cache among them), wall time and cost, priced with
//! the serving model's [`quarry_llm::Price`] (`[model.price]` or
//! `[models.<task>.price]`, USD per 1M tokens). The request's cost is the sum
//! of its calls'; it is known when every call's is (a price is configured
//! and the server reported the tokens). Timings in microseconds split the
//! wall time: model calls (`model_us`), tool calls (`tool_us`, concurrent
//! calls counted once) and database time (`database_us`), for the overhead
//! benchmark (`quarry bench ask`).

use std::time::{Duration, Instant};

use quarry_llm::{Price, TASK_ANSWER, TASK_JUDGE, TASK_SQL};
use quarry_proto::v1::{ModelCallUsage, Usage};

/// Sets `call`'s tokens from the `usage` its model reported and their cost
/// at `price` (unknown without one); without `usage` the call is left as it
/// is (no tokens, cost unknown).
pub(crate) fn set_tokens(
    call: &mut ModelCallUsage,
    usage: Option<quarry_llm::Usage>,
    price: Option<Price>,
) {
    let Some(u) = usage else {
        return;
    };
    call.prompt_tokens = u64::from(u.prompt_tokens);
    call.completion_tokens = u64::from(u.completion_tokens);
    call.total_tokens = u64::from(u.total_tokens);
    call.cached_prompt_tokens = u64::from(u.cached_prompt_tokens);
    call.from_cache = u.from_cache;
    call.cost_known = price.is_some();
    call.cost_usd = price.map_or(0.0, |p| p.cost_usd(u));
}

/// The usage of one request as it runs: its model calls, tool calls and the
/// model call in flight.
#[derive(Debug, Default)]
pub(crate) struct Accounting {
    /// What the `usage` event will say; totals are filled in by
    /// [`Accounting::total`].
    pub(crate) usage: Usage,
    /// When the model call in flight (the last of `usage.calls`) was sent;
    /// `None` between calls.
    open_call: Option<Instant>,
}

impl Accounting {
    /// Starts the accounting of agentic model call number `step` (from 1).
    pub(crate) fn model_call_sent(&mut self, step: u32, model: &str) {
        self.usage.calls.push(ModelCallUsage {
            step,
            task: TASK_ANSWER.to_string(),
            model: model.to_string(),
            ..ModelCallUsage::default()
        });
        self.open_call = Some(Instant::now());
    }

    /// Accounts an event of the model call in flight: its wall time so far
    /// and, for the usage event, its tokens and their cost at `price`.
    pub(crate) fn model_call_event(
        &mut self,
        usage: Option<quarry_llm::Usage>,
        price: Option<Price>,
    ) {
        let (Some(sent), Some(call)) = (self.open_call, self.usage.calls.last_mut()) else {
            return;
        };
        call.elapsed_ms = sent.elapsed().as_millis() as u64;
        call.elapsed_us = sent.elapsed().as_micros() as u64;
        set_tokens(call, usage, price);
    }

    /// The model call in flight has ended (its last event is accounted).
    pub(crate) fn model_call_ended(&mut self) {
        self.open_call = None;
    }

    /// Tokens the request's model calls have used so far.
    pub(crate) fn tokens_used(&self) -> u64 {
        self.usage.calls.iter().map(|c| c.total_tokens).sum()
    }

    /// Tokens and USD of the request's model calls so far that the Ask
    /// itself charges: every call but the SQL tool's (`sql`, `judge`),
    /// which the SQL tool charges itself.
    pub(crate) fn charged_by_the_ask(&self) -> (u64, f64) {
        charged_by_the_ask(&self.usage.calls)
    }

    /// Adds model calls made outside the agentic loop (the routing model's,
    /// the SQL tool's) to the request's usage.
    pub(crate) fn account_calls(&mut self, calls: impl IntoIterator<Item = ModelCallUsage>) {
        self.usage.calls.extend(calls);
    }

    /// Counts `n` tool calls.
    pub(crate) fn tool_calls(&mut self, n: usize) {
        self.usage.tool_calls += u32::try_from(n).unwrap_or(u32::MAX);
    }

    /// The request's usage once its work has ended, `elapsed` after it
    /// started: a model call the deadline cut short gets its wall time, the
    /// tool clock's times and the model calls tools reported are added, and
    /// the totals are the sums over the calls.
    pub(crate) fn total(&mut self, clock: &mut ToolClock, elapsed: Duration) -> Usage {
        if let (Some(sent), Some(call)) = (self.open_call.take(), self.usage.calls.last_mut()) {
            // the deadline cut the call short
            call.elapsed_ms = sent.elapsed().as_millis() as u64;
            call.elapsed_us = sent.elapsed().as_micros() as u64;
        }
        self.usage.tool_us = clock.busy().as_micros() as u64;
        self.usage.database_us = clock.database.as_micros() as u64;
        self.usage.model_us = self
            .usage
            .calls
            .iter()
            .filter(|c| c.task != TASK_SQL && c.task != TASK_JUDGE)
            .map(|c| c.elapsed_us)
            .sum();
        self.account_calls(clock.take_model_calls());
        // the request's totals are the sums over its calls
        let calls = &self.usage.calls;
        self.usage.model_calls = u32::try_from(calls.len()).unwrap_or(u32::MAX);
        self.usage.prompt_tokens = calls.iter().map(|c| c.prompt_tokens).sum();
        self.usage.completion_tokens = calls.iter().map(|c| c.completion_tokens).sum();
        self.usage.cached_prompt_tokens = calls.iter().map(|c| c.cached_prompt_tokens).sum();
        self.usage.model_cache_hits =
            u32::try_from(calls.iter().filter(|c| c.from_cache).count()).unwrap_or(u32::MAX);
        self.usage.result_cache_hits = clock.result_cache_hits;
        self.usage.result_cache_misses = clock.result_cache_misses;
        self.usage.total_tokens = self.tokens_used();
        self.usage.cost_usd = self.usage.calls.iter().map(|c| c.cost_usd).sum();
        self.usage.cost_known = self.usage.calls.iter().all(|c| c.cost_known);
        self.usage.elapsed_ms = elapsed.as_millis() as u64;
        self.usage.elapsed_us = elapsed.as_micros() as u64;
        std::mem::take(&mut self.usage)
    }
}

/// Time spent in tool calls (concurrent calls counted once) and in the
/// database, as tool calls start and end.
#[derive(Debug, Default)]
pub(crate) struct ToolClock {
    /// Tool calls running now.
    running: u32,
    /// Since when at least one tool call has been running.
    busy_since: Option<Instant>,
    /// Closed busy periods.
    busy: Duration,
    /// Database time the tools reported.
    pub(crate) database: Duration,
    /// Model calls the tools reported (the SQL tool's
    /// `GenerateSql.model_calls`), not yet in the usage.
    model_calls: Vec<ModelCallUsage>,
    /// SQL results the tools reported served from the result cache.
    pub(crate) result_cache_hits: u32,
    /// SQL results looked up in the result cache and executed.
    pub(crate) result_cache_misses: u32,
}

impl ToolClock {
    /// A tool call starts now; returns the instant.
    pub(crate) fn begin(&mut self) -> Instant {
        let now = Instant::now();
        if self.running == 0 {
            self.busy_since = Some(now);
        }
        self.running += 1;
        now
    }

    /// The call that began at `started` ends now; returns its wall time.
    pub(crate) fn end(&mut self, started: Instant) -> Duration {
        let now = Instant::now();
        self.running = self.running.saturating_sub(1);
        if self.running == 0
            && let Some(since) = self.busy_since.take()
        {
            self.busy += now - since;
        }
        now - started
    }

    /// Busy time so far, including a period still open.
    pub(crate) fn busy(&self) -> Duration {
        self.busy
            + self
                .busy_since
                .map_or(Duration::ZERO, |since| since.elapsed())
    }

    /// Keeps model calls a tool made, for the usage.
    pub(crate) fn tool_model_calls(&mut self, calls: Vec<ModelCallUsage>) {
        self.model_calls.extend(calls);
    }

    /// The model calls tools reported since the last take.
    pub(crate) fn take_model_calls(&mut self) -> Vec<ModelCallUsage> {
        std::mem::take(&mut self.model_calls)
    }
}

/// Whether the Ask charges `call` itself: every model call but the SQL
/// tool's (`sql`, `judge`), which `GenerateSql` charges itself.
pub(crate) fn ask_charges(call: &ModelCallUsage) -> bool {
    call.task != TASK_SQL && call.task != TASK_JUDGE
}

/// Tokens and USD of the `calls` the Ask charges ([`ask_charges`]).
pub(crate) fn charged_by_the_ask(calls: &[ModelCallUsage]) -> (u64, f64) {
    calls
        .iter()
        .filter(|c| ask_charges(c))
        .fold((0, 0.0), |(t, u), c| (t + c.total_tokens, u + c.cost_usd))
}
