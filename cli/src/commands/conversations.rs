//! `quarry conversations`: list, show and delete the caller's stored
//! conversations over gRPC (`AssistantService.ListConversations`,
//! `GetConversation`, `DeleteConversation`). Continue one with
//! `quarry ask --conversation <id> "<follow-up>"`.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use quarry_proto::v1::{
    AnswerStatus, DeleteConversationRequest, GetConversationRequest, ListConversationsRequest,
    assistant_service_client::AssistantServiceClient,
};
use tonic::transport::Channel;

use quarry_server::client::status_error;

use super::{Remote, summaries::utc};

/// Arguments of `quarry conversations`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// The caller's conversations, most recently active first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// One conversation, turn by turn (question, tool calls and SQL, answer).
    Show {
        /// Conversation id (from `quarry ask` or `list`).
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a conversation and its turns.
    Delete {
        /// Conversation id.
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Lists, shows or deletes conversations on the server.
///
/// # Errors
/// Connection and gRPC failures.
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match args.action {
        Action::List { limit, remote } => {
            list(&remote.server, &remote.token, limit, &mut out).await
        }
        Action::Show { id, remote } => show(&remote.server, &remote.token, &id, &mut out).await,
        Action::Delete { id, remote } => delete(&remote.server, &remote.token, &id, &mut out).await,
    }
}

async fn client(server: &str) -> anyhow::Result<AssistantServiceClient<Channel>> {
    AssistantServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

/// Prints the caller's conversations, most recently active first, up to
/// `limit` (following pages as needed): id, turns, last activity, title.
///
/// # Errors
/// Connection and gRPC failures.
pub async fn list(
    server: &str,
    token: &str,
    limit: usize,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = client(server).await?;
    let mut page_token = String::new();
    let mut shown = 0;
    loop {
        let page = client
            .list_conversations(quarry_server::client::bearer_request(
                ListConversationsRequest {
                    page_size: 50,
                    page_token: std::mem::take(&mut page_token),
                },
                token,
            )?)
            .await
            .map_err(status_error)?
            .into_inner();
        for c in &page.conversations {
            if shown == limit {
                return Ok(());
            }
            writeln!(
                out,
                "{}  {:>3} turn{}  {}  {}",
                c.conversation_id,
                c.turn_count,
                if c.turn_count == 1 { " " } else { "s" },
                utc(c.updated_at.as_ref(), "-"),
                c.title
            )?;
            shown += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if shown == 0 {
        writeln!(out, "no conversations")?;
    }
    Ok(())
}

/// Prints one conversation turn by turn: question, route, tool calls (with
/// the SQL), answer, status and tokens.
///
/// # Errors
/// `NOT_FOUND` for an unknown, expired or foreign id; connection failures.
pub async fn show(server: &str, token: &str, id: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let response = client(server)
        .await?
        .get_conversation(quarry_server::client::bearer_request(
            GetConversationRequest {
                conversation_id: id.to_string(),
            },
            token,
        )?)
        .await
        .map_err(status_error)?
        .into_inner();
    if let Some(c) = &response.conversation {
        writeln!(
            out,
            "conversation {} — {} turns, started {}, last {}",
            c.conversation_id,
            c.turn_count,
            utc(c.created_at.as_ref(), "-"),
            utc(c.updated_at.as_ref(), "-")
        )?;
    }
    for turn in &response.turns {
        writeln!(out)?;
        writeln!(
            out,
            "#{} {}  [{}; {}]",
            turn.turn,
            utc(turn.asked_at.as_ref(), "-"),
            turn.route,
            AnswerStatus::try_from(turn.status)
                .unwrap_or(AnswerStatus::Unspecified)
                .as_str_name()
        )?;
        writeln!(out, "? {}", turn.question)?;
        for call in &turn.tool_calls {
            let result = if call.error.is_empty() {
                format!("{} results", call.result_count)
            } else {
                format!("error: {}", call.error)
            };
            writeln!(
                out,
                "  ⚙ {} {} → {result}",
                call.tool_name, call.arguments_json
            )?;
            if !call.sql.is_empty() {
                writeln!(out, "    {}", call.sql)?;
            }
        }
        for line in turn.answer.lines() {
            writeln!(out, "  {line}")?;
        }
        if let Some(usage) = &turn.usage {
            writeln!(
                out,
                "  ({} model calls, {} tokens, {} ms)",
                usage.model_calls, usage.total_tokens, usage.elapsed_ms
            )?;
        }
    }
    Ok(())
}

/// Deletes one conversation and prints how many turns went with it.
///
/// # Errors
/// `NOT_FOUND` for an unknown, expired or foreign id; connection failures.
pub async fn delete(
    server: &str,
    token: &str,
    id: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let response = client(server)
        .await?
        .delete_conversation(quarry_server::client::bearer_request(
            DeleteConversationRequest {
                conversation_id: id.to_string(),
            },
            token,
        )?)
        .await
        .map_err(status_error)?
        .into_inner();
    writeln!(
        out,
        "deleted conversation {id} ({} turns)",
        response.turns_deleted
    )?;
    Ok(())
}
