//! The `describe_tables` tool: the columns, keys and comments of tables the
//! model names, for when the schema context of its prompt (the tables schema
//! linking chose for the question, and a catalogue line naming the others)
//! does not cover what it needs. It reads `DescribeSchema` under the
//! caller's own grant, so it shows exactly what `DescribeSchema` shows the
//! caller: a table the policy hides is reported as not available, the same
//! as one that does not exist, and hidden columns never appear.

use futures::future::BoxFuture;
use quarry_llm::{ToolCall, ToolSpec};
use quarry_proto::v1::{
    DescribeSchemaRequest, sql_service_client::SqlServiceClient, tool_result::Outcome,
};

use super::{ModelTool, ToolContext, ToolOutcome, sanitize};
use crate::{caller::AskCaller, transport::ToolChannel};

/// Name of the tool as the model sees it.
pub const DESCRIBE_TABLES: &str = "describe_tables";

/// Tables one call may describe, so one call cannot pull the whole catalog
/// back into the prompt.
pub const MAX_TABLES_PER_CALL: usize = 8;

/// The `describe_tables` tool, over the SQL tool's gRPC client.
#[derive(Debug, Clone)]
pub struct DescribeTablesTool {
    client: SqlServiceClient<ToolChannel>,
}

impl DescribeTablesTool {
    /// The tool over `client`.
    pub fn new(client: SqlServiceClient<ToolChannel>) -> Self {
        Self { client }
    }

    async fn describe(
        &self,
        arguments: &str,
        caller: &AskCaller,
    ) -> Result<(Vec<String>, quarry_proto::v1::DescribeSchemaResponse), String> {
        #[derive(serde::Deserialize)]
        struct Args {
            tables: Vec<String>,
        }
        let args: Args = serde_json::from_str(arguments).map_err(|e| {
            format!("arguments must be a JSON object {{\"tables\": [\"schema.table\", ...]}}: {e}")
        })?;
        let mut asked: Vec<String> = args
            .tables
            .into_iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        asked.dedup();
        if asked.is_empty() {
            return Err("name at least one table, as `schema.table`".to_string());
        }
        if asked.len() > MAX_TABLES_PER_CALL {
            return Err(format!(
                "at most {MAX_TABLES_PER_CALL} tables per call; name fewer"
            ));
        }
        let mut client = self.client.clone();
        let response = client
            .describe_schema(caller.request(DescribeSchemaRequest {
                tables: asked.clone(),
                ..Default::default()
            }))
            .await
            .map_err(|status| status.message().to_string())?
            .into_inner();
        Ok((asked, response))
    }
}

impl ModelTool for DescribeTablesTool {
    fn name(&self) -> &str {
        DESCRIBE_TABLES
    }

    fn scope(&self) -> Option<&'static str> {
        Some(quarry_auth::scopes::SQL_QUERY)
    }

    fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async move {
            Some(ToolSpec {
                name: DESCRIBE_TABLES.to_string(),
                description:
                    "Columns, keys and comments of tables not described in the system message."
                        .to_string(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "tables": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "schema.table names"
                        }
                    },
                    "required": ["tables"]
                }),
            })
        })
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            let (asked, response) = match self.describe(&call.arguments, cx.caller).await {
                Ok(found) => found,
                Err(message) => return ToolOutcome::failed(&call.id, message),
            };
            let found: Vec<String> = response
                .tables
                .iter()
                .map(|t| format!("{}.{}", t.schema, t.name))
                .collect();
            let missing: Vec<&str> = asked
                .iter()
                .filter(|t| !found.contains(t))
                .map(String::as_str)
                .collect();
            let mut text = sanitize(&response.compact);
            if !missing.is_empty() {
                text.push_str(&sanitize(&format!(
                    "not found or not available: {}\n",
                    missing.join(", ")
                )));
            }
            ToolOutcome {
                for_model: format!("{}\n{text}</tool_result>", super::open_tag(&call.id, "ok")),
                result: Outcome::Schema(response),
                citations: Vec::new(),
                model_calls: Vec::new(),
            }
        })
    }
}
