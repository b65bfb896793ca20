//! Conversations: every `Ask` is a turn of one, stored in the `quarry`
//! schema (`quarry.conversations`, `quarry.conversation_turns`, migration
//! `V2__conversations.sql`) so that a follow-up with the same conversation
//! id is read in the light of the earlier turns.
//!
//! A conversation belongs to the principal that started it (tenant and
//! subject): anyone else gets `NOT_FOUND`, exactly as for an id that never
//! existed, so ids reveal nothing. Retention
//! (`orchestrator.conversation_retention_days`) counts from the last turn:
//! an expired conversation is invisible at once and deleted by the next
//! purge ([`ConversationStore::purge_expired`], run hourly by `quarry serve`).
//!
//! A turn stores the question, mode and route, every tool call (arguments,
//! the SQL as executed, how many rows/hits/summaries came back, or the
//! error), the last SQL that ran, the answer as streamed, its status and
//! citations, and the request's `Usage` (as protobuf bytes, with tokens,
//! cost and wall time also as columns for SQL over the table). Rows of
//! results are never stored.
//!
//! A turn also stores the personal data its model calls saw as placeholders
//! (`pii`, migration `V8__conversation_pii.sql`): each value the request's
//! pseudonymizer replaced that the stored question, answer or SQL holds, in
//! clear (an answer restored for a caller with `pii:read`) or as its
//! placeholder (one without). A follow-up seeds its pseudonymizer with them
//! ([`PriorTurn::pii`]), so that the earlier turns it sends to a model carry
//! placeholders. `GetConversation` does not return them.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use prost::Message as _;
use quarry_auth::Principal;
use quarry_llm::pii::Known;
use quarry_proto::v1::{
    AnswerStatus, AskMode, Citation, CitationKind, ConversationSummary, ConversationTurn,
    GetConversationResponse, TurnToolCall, Usage,
};
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

/// Conversations per `ListConversations` page when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest `ListConversations` page.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Characters of the first question kept as a conversation's title.
const TITLE_CHARS: usize = 200;

/// What went wrong with a conversation.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No such conversation for this principal (never existed, expired,
    /// deleted, or someone else's).
    #[error(
        "conversation {0} not found: it does not exist, has expired or belongs to someone else; leave conversation_id empty to start a new one"
    )]
    NotFound(Uuid),
    /// A page token this server did not issue.
    #[error("page_token is not a token from a previous ListConversations page")]
    BadPageToken,
    /// The database failed.
    #[error("conversation store: {0}")]
    Database(String),
}

/// `NOT_FOUND`, `INVALID_ARGUMENT` naming `page_token`, or `UNAVAILABLE`
/// (logged) for a database failure.
impl From<ConversationError> for tonic::Status {
    fn from(error: ConversationError) -> Self {
        match error {
            ConversationError::NotFound(_) => Self::not_found(error.to_string()),
            ConversationError::BadPageToken => {
                quarry_proto::status::bad_request("page_token", error.to_string())
            }
            ConversationError::Database(_) => {
                warn!(%error, "conversation store failed");
                Self::unavailable(error.to_string())
            }
        }
    }
}

impl From<tokio_postgres::Error> for ConversationError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Database(quarry_db::error_text(&e))
    }
}

impl From<deadpool_postgres::PoolError> for ConversationError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Database(quarry_db::pool_error_text(&e))
    }
}

/// An earlier turn, as a follow-up needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorTurn {
    pub question: String,
    pub answer: String,
    /// The last SQL that ran in that turn.
    pub sql: Option<String>,
    /// The values that turn pseudonymised which its question, answer or SQL
    /// holds, with their placeholders ([`TurnRecord::pii`]).
    pub pii: Vec<Known>,
}

/// One finished `Ask`, to store.
#[derive(Debug, Clone, Default)]
pub struct TurnRecord {
    pub request_id: String,
    pub question: String,
    pub mode: AskMode,
    pub route: String,
    pub tool_calls: Vec<TurnToolCall>,
    /// The last SQL that ran successfully.
    pub sql: Option<String>,
    pub answer: String,
    pub status: AnswerStatus,
    pub citations: Vec<Citation>,
    pub usage: Usage,
    /// The values the request's pseudonymizer replaced that `question`,
    /// `answer` or `sql` holds, in clear or as the placeholder
    /// ([`referenced_pii`]): what a follow-up must seed its own
    /// pseudonymizer with before sending this turn to a model.
    pub pii: Vec<Known>,
}

/// Of `known` (a request's [`quarry_llm::pii::Pseudonymizer::known`]), the
/// values that one of `texts` holds, in clear or as the placeholder. Only
/// those are stored with a turn: the rest of what the request saw (rows
/// never mentioned again) is not kept.
pub fn referenced_pii(known: Vec<Known>, texts: &[&str]) -> Vec<Known> {
    known
        .into_iter()
        .filter(|k| {
            texts
                .iter()
                .any(|t| t.contains(&k.value) || t.contains(&k.placeholder))
        })
        .collect()
}

/// A tool call as stored (`tool_calls` jsonb).
#[derive(Debug, Serialize, Deserialize)]
struct StoredToolCall {
    call_id: String,
    tool_name: String,
    /// The arguments as JSON when they parse, else the text as a string.
    arguments: serde_json::Value,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sql: String,
    result_count: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    error: String,
}

/// A citation as stored (`citations` jsonb).
#[derive(Debug, Serialize, Deserialize)]
struct StoredCitation {
    /// `sql_rows`, `document` or `summary`.
    kind: String,
    call_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sql: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    source_id: String,
}

/// Stored conversations over a connection pool whose role owns the
/// `quarry` schema tables (the one `quarry migrate` ran as).
#[derive(Clone)]
pub struct ConversationStore {
    pool: Pool,
    /// Days a conversation is kept after its last turn; 0 keeps it forever.
    retention_days: u32,
}

impl std::fmt::Debug for ConversationStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationStore")
            .field("retention_days", &self.retention_days)
            .finish_non_exhaustive()
    }
}

impl ConversationStore {
    /// A store over `pool`, keeping conversations `retention_days` after
    /// their last turn (0: forever).
    pub fn new(pool: Pool, retention_days: u32) -> Self {
        Self {
            pool,
            retention_days,
        }
    }

    /// The last `max_turns` turns of conversation `id`, oldest first.
    ///
    /// # Errors
    /// [`ConversationError::NotFound`] unless `owner` owns a live
    /// conversation `id`; [`ConversationError::Database`].
    pub async fn history(
        &self,
        id: Uuid,
        owner: &Principal,
        max_turns: u32,
    ) -> Result<Vec<PriorTurn>, ConversationError> {
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        // prepared once per pooled connection, as `append`'s statement
        let statement = client
            .prepare_cached(
                "SELECT t.turn, t.question, t.answer, t.sql, t.pii
                   FROM quarry.conversations c
                   LEFT JOIN LATERAL (
                        SELECT turn, question, answer, sql, pii
                          FROM quarry.conversation_turns
                         WHERE conversation_id = c.id
                         ORDER BY turn DESC
                         LIMIT $5) t ON true
                  WHERE c.id = $1 AND c.tenant = $2 AND c.subject = $3
                    AND ($4 = 0 OR c.updated_at >= now() - make_interval(days => $4))
                  ORDER BY t.turn",
            )
            .await?;
        let rows = client
            .query(
                &statement,
                &[
                    &id,
                    &owner.tenant,
                    &owner.subject,
                    &(self.retention_days as i32),
                    &i64::from(max_turns),
                ],
            )
            .await?;
        if rows.is_empty() {
            return Err(ConversationError::NotFound(id));
        }
        let mut turns = Vec::with_capacity(rows.len());
        for row in rows {
            if row.get::<_, Option<i32>>(0).is_none() {
                continue; // a conversation row without turns (none yet)
            }
            // unreadable values would leave the turn's personal data unknown
            // to the follow-up's pseudonymizer: refuse rather than send it
            let pii = serde_json::from_value(row.get(4))
                .map_err(|e| ConversationError::Database(format!("stored pii of a turn: {e}")))?;
            turns.push(PriorTurn {
                question: row.get(1),
                answer: row.get(2),
                sql: row.get(3),
                pii,
            });
        }
        Ok(turns)
    }

    /// Appends `record` as the next turn of conversation `id`, creating the
    /// conversation (owned by `owner`, titled by the question) on its first
    /// turn. One statement, so concurrent turns of one conversation get
    /// distinct numbers. Returns the turn's number.
    ///
    /// # Errors
    /// [`ConversationError::NotFound`] when `id` belongs to someone else;
    /// [`ConversationError::Database`].
    pub async fn append(
        &self,
        id: Uuid,
        owner: &Principal,
        record: &TurnRecord,
    ) -> Result<u32, ConversationError> {
        let title: String = record.question.trim().chars().take(TITLE_CHARS).collect();
        let tool_calls: Vec<StoredToolCall> = record
            .tool_calls
            .iter()
            .map(|c| StoredToolCall {
                call_id: c.call_id.clone(),
                tool_name: c.tool_name.clone(),
                arguments: serde_json::from_str(&c.arguments_json)
                    .unwrap_or_else(|_| serde_json::Value::String(c.arguments_json.clone())),
                sql: c.sql.clone(),
                result_count: c.result_count,
                error: c.error.clone(),
            })
            .collect();
        let citations: Vec<StoredCitation> = record
            .citations
            .iter()
            .map(|c| StoredCitation {
                kind: citation_kind_name(c.kind).to_string(),
                call_id: c.call_id.clone(),
                sql: c.sql.clone(),
                source_id: c.source_id.clone(),
            })
            .collect();
        let tool_calls = serde_json::to_value(tool_calls)
            .map_err(|e| ConversationError::Database(e.to_string()))?;
        let citations = serde_json::to_value(citations)
            .map_err(|e| ConversationError::Database(e.to_string()))?;
        let pii = serde_json::to_value(&record.pii)
            .map_err(|e| ConversationError::Database(e.to_string()))?;
        let usage = &record.usage;
        let cost = usage.cost_known.then_some(usage.cost_usd);
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        // Prepared once per pooled connection (deadpool's statement cache):
        // every Ask stores a turn, and parsing and planning this statement
        // each time cost a round trip and PostgreSQL CPU.
        let statement = client
            .prepare_cached(
                "WITH c AS (
                     INSERT INTO quarry.conversations AS c (id, tenant, subject, title, turn_count)
                     VALUES ($1, $2, $3, $4, 1)
                     ON CONFLICT (id) DO UPDATE
                        SET turn_count = c.turn_count + 1, updated_at = now()
                      WHERE c.tenant = EXCLUDED.tenant AND c.subject = EXCLUDED.subject
                     RETURNING c.turn_count)
                 INSERT INTO quarry.conversation_turns
                        (conversation_id, turn, request_id, question, mode, route, tool_calls,
                         sql, answer, status, citations, prompt_tokens, completion_tokens,
                         cost_usd, elapsed_ms, usage, pii)
                 SELECT $1, c.turn_count, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17, $18, $19
                   FROM c
                 RETURNING turn",
            )
            .await?;
        let row = client
            .query_opt(
                &statement,
                &[
                    &id,
                    &owner.tenant,
                    &owner.subject,
                    &title,
                    &record.request_id,
                    &record.question,
                    &mode_name(record.mode),
                    &record.route,
                    &tool_calls,
                    &record.sql,
                    &record.answer,
                    &status_name(record.status),
                    &citations,
                    &(usage.prompt_tokens as i64),
                    &(usage.completion_tokens as i64),
                    &cost,
                    &(usage.elapsed_ms as i64),
                    &usage.encode_to_vec(),
                    &pii,
                ],
            )
            .await?;
        match row {
            Some(row) => Ok(row.get::<_, i32>(0).max(0) as u32),
            None => Err(ConversationError::NotFound(id)),
        }
    }

    /// A page of `owner`'s live conversations, most recently active first,
    /// and the token of the next page (empty on the last).
    ///
    /// # Errors
    /// [`ConversationError::BadPageToken`]; [`ConversationError::Database`].
    pub async fn list(
        &self,
        owner: &Principal,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<ConversationSummary>, String), ConversationError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(parse_page_token(page_token).ok_or(ConversationError::BadPageToken)?)
        };
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(at), Some(id)),
            None => (None, None),
        };
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        let rows = client
            .query(
                "SELECT id, title, turn_count, created_at, updated_at
                   FROM quarry.conversations
                  WHERE tenant = $1 AND subject = $2
                    AND ($3 = 0 OR updated_at >= now() - make_interval(days => $3))
                    AND ($4::timestamptz IS NULL OR (updated_at, id) < ($4, $5::uuid))
                  ORDER BY updated_at DESC, id DESC
                  LIMIT $6",
                &[
                    &owner.tenant,
                    &owner.subject,
                    &(self.retention_days as i32),
                    &after_at,
                    &after_id,
                    &(i64::from(size) + 1),
                ],
            )
            .await?;
        let page = &rows[..rows.len().min(size as usize)];
        // one row beyond the page means there is a next page, which starts
        // after the page's last row
        let next = match page.last() {
            Some(last) if rows.len() > page.len() => page_token_of(last.get(4), last.get(0)),
            _ => String::new(),
        };
        let conversations = page
            .iter()
            .map(|row| ConversationSummary {
                conversation_id: row.get::<_, Uuid>(0).to_string(),
                title: row.get(1),
                turn_count: row.get::<_, i32>(2).max(0) as u32,
                created_at: Some(timestamp(row.get(3))),
                updated_at: Some(timestamp(row.get(4))),
            })
            .collect();
        Ok((conversations, next))
    }

    /// `owner`'s conversation `id` with every turn, oldest first.
    ///
    /// # Errors
    /// [`ConversationError::NotFound`]; [`ConversationError::Database`].
    pub async fn get(
        &self,
        id: Uuid,
        owner: &Principal,
    ) -> Result<GetConversationResponse, ConversationError> {
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        let Some(head) = client
            .query_opt(
                "SELECT title, turn_count, created_at, updated_at
                   FROM quarry.conversations
                  WHERE id = $1 AND tenant = $2 AND subject = $3
                    AND ($4 = 0 OR updated_at >= now() - make_interval(days => $4))",
                &[
                    &id,
                    &owner.tenant,
                    &owner.subject,
                    &(self.retention_days as i32),
                ],
            )
            .await?
        else {
            return Err(ConversationError::NotFound(id));
        };
        let rows = client
            .query(
                "SELECT turn, request_id, question, mode, route, tool_calls, sql, answer,
                        status, citations, usage, asked_at
                   FROM quarry.conversation_turns
                  WHERE conversation_id = $1
                  ORDER BY turn",
                &[&id],
            )
            .await?;
        let mut turns = Vec::with_capacity(rows.len());
        for row in rows {
            let turn: i32 = row.get(0);
            let tool_calls: serde_json::Value = row.get(5);
            let citations: serde_json::Value = row.get(9);
            let usage: Vec<u8> = row.get(10);
            let tool_calls: Vec<StoredToolCall> = serde_json::from_value(tool_calls)
                .map_err(|e| ConversationError::Database(format!("turn {turn} tool_calls: {e}")))?;
            let citations: Vec<StoredCitation> = serde_json::from_value(citations)
                .map_err(|e| ConversationError::Database(format!("turn {turn} citations: {e}")))?;
            let usage = Usage::decode(usage.as_slice())
                .map_err(|e| ConversationError::Database(format!("turn {turn} usage: {e}")))?;
            turns.push(ConversationTurn {
                turn: turn.max(0) as u32,
                request_id: row.get(1),
                question: row.get(2),
                mode: mode_from_name(row.get(3)) as i32,
                route: row.get(4),
                tool_calls: tool_calls
                    .into_iter()
                    .map(|c| TurnToolCall {
                        call_id: c.call_id,
                        tool_name: c.tool_name,
                        arguments_json: match c.arguments {
                            serde_json::Value::String(text) => text,
                            other @ (serde_json::Value::Null
                            | serde_json::Value::Bool(_)
                            | serde_json::Value::Number(_)
                            | serde_json::Value::Array(_)
                            | serde_json::Value::Object(_)) => other.to_string(),
                        },
                        sql: c.sql,
                        result_count: c.result_count,
                        error: c.error,
                    })
                    .collect(),
                sql: row.get::<_, Option<String>>(6).unwrap_or_default(),
                answer: row.get(7),
                status: status_from_name(row.get(8)) as i32,
                citations: citations
                    .into_iter()
                    .map(|c| Citation {
                        kind: citation_kind_from_name(&c.kind) as i32,
                        call_id: c.call_id,
                        sql: c.sql,
                        source_id: c.source_id,
                    })
                    .collect(),
                usage: Some(usage),
                asked_at: Some(timestamp(row.get(11))),
            });
        }
        Ok(GetConversationResponse {
            conversation: Some(ConversationSummary {
                conversation_id: id.to_string(),
                title: head.get(0),
                turn_count: head.get::<_, i32>(1).max(0) as u32,
                created_at: Some(timestamp(head.get(2))),
                updated_at: Some(timestamp(head.get(3))),
            }),
            turns,
        })
    }

    /// Deletes `owner`'s conversation `id` with its turns; returns how many
    /// turns went. An expired conversation not yet purged counts as gone.
    ///
    /// # Errors
    /// [`ConversationError::NotFound`]; [`ConversationError::Database`].
    pub async fn delete(&self, id: Uuid, owner: &Principal) -> Result<u32, ConversationError> {
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        let row = client
            .query_opt(
                "DELETE FROM quarry.conversations
                  WHERE id = $1 AND tenant = $2 AND subject = $3
                    AND ($4 = 0 OR updated_at >= now() - make_interval(days => $4))
                 RETURNING turn_count",
                &[
                    &id,
                    &owner.tenant,
                    &owner.subject,
                    &(self.retention_days as i32),
                ],
            )
            .await?;
        match row {
            Some(row) => Ok(row.get::<_, i32>(0).max(0) as u32),
            None => Err(ConversationError::NotFound(id)),
        }
    }

    /// Deletes every conversation whose last turn is older than the
    /// retention (nothing when it is 0); returns how many went.
    ///
    /// # Errors
    /// [`ConversationError::Database`].
    pub async fn purge_expired(&self) -> Result<u64, ConversationError> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let client = quarry_db::checkout(&self.pool, "conversations").await?;
        let deleted = client
            .execute(
                "DELETE FROM quarry.conversations
                  WHERE updated_at < now() - make_interval(days => $1)",
                &[&(self.retention_days as i32)],
            )
            .await?;
        Ok(deleted)
    }
}

/// `ListConversations` page token: the last conversation's `updated_at`
/// (microseconds since the epoch) and id.
fn page_token_of(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", at.timestamp_micros(), id.simple())
}

fn parse_page_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = token.split_once('.')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, Uuid::try_parse(id).ok()?))
}

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    std::time::SystemTime::from(at).into()
}

fn mode_name(mode: AskMode) -> &'static str {
    match mode {
        AskMode::Agentic => "agentic",
        AskMode::Router => "router",
        AskMode::Unspecified => "unspecified",
    }
}

fn mode_from_name(name: &str) -> AskMode {
    match name {
        "agentic" => AskMode::Agentic,
        "router" => AskMode::Router,
        _ => AskMode::Unspecified,
    }
}

fn status_name(status: AnswerStatus) -> &'static str {
    match status {
        AnswerStatus::Answered => "answered",
        AnswerStatus::Unanswered => "unanswered",
        AnswerStatus::LimitReached => "limit_reached",
        AnswerStatus::Failed => "failed",
        AnswerStatus::Unspecified => "unspecified",
    }
}

fn status_from_name(name: &str) -> AnswerStatus {
    match name {
        "answered" => AnswerStatus::Answered,
        "unanswered" => AnswerStatus::Unanswered,
        "limit_reached" => AnswerStatus::LimitReached,
        "failed" => AnswerStatus::Failed,
        _ => AnswerStatus::Unspecified,
    }
}

fn citation_kind_name(kind: i32) -> &'static str {
    match CitationKind::try_from(kind).unwrap_or(CitationKind::Unspecified) {
        CitationKind::SqlRows => "sql_rows",
        CitationKind::Document => "document",
        CitationKind::Summary => "summary",
        CitationKind::Unspecified => "unspecified",
    }
}

fn citation_kind_from_name(name: &str) -> CitationKind {
    match name {
        "sql_rows" => CitationKind::SqlRows,
        "document" => CitationKind::Document,
        "summary" => CitationKind::Summary,
        _ => CitationKind::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let at = DateTime::from_timestamp_micros(1_763_700_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(parse_page_token(&page_token_of(at, id)), Some((at, id)));
        for bad in ["", "x", "1.2", "abc.def", "12", "1.not-a-uuid"] {
            assert_eq!(parse_page_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_values_the_stored_text_holds_are_kept_with_a_turn() {
        let known = |placeholder: &str, value: &str| Known {
            placeholder: placeholder.to_string(),
            value: value.to_string(),
        };
        let all = vec![
            known("<NAME_1>", "Ada Lovelace"),
            known("<NAME_2>", "Mary Somerville"),
            known("<EMAIL_3>", "ada@example.com"),
            known("<NAME_4>", "Charles Babbage"),
        ];
        let kept = referenced_pii(
            all,
            &[
                "who wrote to ada@example.com?",
                "Ada Lovelace did.",
                "SELECT 1 WHERE x = '<NAME_4>'",
            ],
        );
        let kept: Vec<&str> = kept.iter().map(|k| k.placeholder.as_str()).collect();
        assert_eq!(kept, ["<NAME_1>", "<EMAIL_3>", "<NAME_4>"]);
    }

    #[test]
    fn names_round_trip() {
        for status in [
            AnswerStatus::Answered,
            AnswerStatus::Unanswered,
            AnswerStatus::LimitReached,
            AnswerStatus::Failed,
        ] {
            assert_eq!(status_from_name(status_name(status)), status);
        }
        for mode in [AskMode::Agentic, AskMode::Router] {
            assert_eq!(mode_from_name(mode_name(mode)), mode);
        }
        for kind in [
            CitationKind::SqlRows,
            CitationKind::Document,
            CitationKind::Summary,
        ] {
            assert_eq!(
                citation_kind_from_name(citation_kind_name(kind as i32)),
                kind
            );
        }
    }
}
