//! The `explain_sql` tool: a read-only SELECT explained by the SQL tool
//! (`SqlService.ExplainSql`) — in plain words, with PostgreSQL's cost and
//! row estimates (`EXPLAIN`, never `ANALYZE`: the query is not run) and
//! hints about likely inefficiencies. The assistant does not register it by
//! default; the MCP server offers it to agent hosts (`quarry-server`'s
//! `mcp` module) with the same spec a model would read.

use futures::future::BoxFuture;
use quarry_llm::{ToolCall, ToolSpec};
use quarry_proto::v1::{
    ExplainSqlRequest, ExplainSqlResponse, sql_service_client::SqlServiceClient,
    tool_result::Outcome,
};

use super::{ModelTool, ToolContext, ToolOutcome, sanitize};
use crate::{caller::AskCaller, transport::ToolChannel};

/// Name of the tool as a model sees it.
pub const EXPLAIN_SQL: &str = "explain_sql";

/// The `explain_sql` tool, over the SQL tool's gRPC client.
#[derive(Debug, Clone)]
pub struct ExplainSqlTool {
    client: SqlServiceClient<ToolChannel>,
}

impl ExplainSqlTool {
    /// The tool over `client`.
    pub fn new(client: SqlServiceClient<ToolChannel>) -> Self {
        Self { client }
    }

    /// Explains the `sql` of `arguments` (`{"sql": "<one SELECT>"}`) for
    /// `caller`.
    ///
    /// # Errors
    /// A message naming the argument at fault, or the SQL service's status
    /// message (a refused statement, a missing `sql:explain` scope).
    pub async fn explain(
        &self,
        arguments: &str,
        caller: &AskCaller,
    ) -> Result<ExplainSqlResponse, String> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            sql: String,
        }
        let args: Args = serde_json::from_str(arguments).map_err(|e| {
            format!("arguments must be a JSON object {{\"sql\": \"<one SELECT>\"}}: {e}")
        })?;
        if args.sql.trim().is_empty() {
            return Err("`sql` must be one non-empty SELECT statement".to_string());
        }
        let mut client = self.client.clone();
        client
            .explain_sql(caller.request(ExplainSqlRequest { sql: args.sql }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| status.message().to_string())
    }
}

impl ModelTool for ExplainSqlTool {
    fn name(&self) -> &str {
        EXPLAIN_SQL
    }

    fn scope(&self) -> Option<&'static str> {
        Some(quarry_auth::scopes::SQL_EXPLAIN)
    }

    fn spec<'a>(&'a self, _caller: &'a AskCaller) -> BoxFuture<'a, Option<ToolSpec>> {
        Box::pin(async move { Some(spec()) })
    }

    fn call<'a>(&'a self, call: &'a ToolCall, cx: ToolContext<'a>) -> BoxFuture<'a, ToolOutcome> {
        Box::pin(async move {
            match self.explain(&call.arguments, cx.caller).await {
                Ok(explained) => ToolOutcome {
                    for_model: explanation_for_model(&call.id, &explained),
                    result: Outcome::Explanation(explained),
                    citations: Vec::new(),
                    model_calls: Vec::new(),
                },
                Err(message) => ToolOutcome::failed(&call.id, message),
            }
        })
    }
}

/// The `explain_sql` tool as offered to a model.
pub fn spec() -> ToolSpec {
    ToolSpec {
        name: EXPLAIN_SQL.to_string(),
        description: "Explain one read-only SELECT without running it: what it computes, in plain \
                      words, with PostgreSQL's planner estimates (total cost in the planner's \
                      units, rows) and hints about likely inefficiencies (sequential scans of \
                      large tables, sorts without a limit, cartesian products). The statement is \
                      checked against the caller's policy like any query."
            .to_string(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {
                "sql": {
                    "type": "string",
                    "description": "One SELECT, tables schema-qualified."
                }
            },
            "required": ["sql"],
            "additionalProperties": false
        }),
    }
}

/// An explanation as delimited data for a model: the text, the estimates,
/// the plan's node types and each hint.
pub fn explanation_for_model(call_id: &str, explained: &ExplainSqlResponse) -> String {
    let mut text = format!(
        "{}\n{}\nestimated cost {:.2}, estimated rows {:.0}\n",
        super::open_tag(call_id, "ok"),
        sanitize(&explained.explanation),
        explained.total_cost,
        explained.estimated_rows,
    );
    if !explained.node_types.is_empty() {
        text.push_str(&sanitize(&format!(
            "plan nodes, depth first: {}\n",
            explained.node_types.join(", ")
        )));
    }
    for hint in &explained.hints {
        text.push_str(&sanitize(&format!(
            "hint {}: {}\n",
            hint.kind, hint.message
        )));
    }
    text.push_str("</tool_result>");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_proto::v1::PlanHint;

    #[test]
    fn the_spec_asks_for_sql_only() {
        let spec = spec();
        assert_eq!(spec.name, EXPLAIN_SQL);
        assert_eq!(spec.parameters["required"], serde_json::json!(["sql"]));
        assert_eq!(spec.parameters["additionalProperties"], false);
    }

    #[test]
    fn an_explanation_is_delimited_data_with_estimates_and_hints() {
        let text = explanation_for_model(
            "call_1",
            &ExplainSqlResponse {
                explanation: "Counts the artworks.".to_string(),
                total_cost: 12.5,
                estimated_rows: 1.0,
                hints: vec![PlanHint {
                    kind: "seq_scan_large_table".to_string(),
                    message: "scans tate.artworks".to_string(),
                }],
                node_types: vec!["Aggregate".to_string(), "Seq Scan".to_string()],
                ..Default::default()
            },
        );
        assert!(
            text.starts_with(
                "<tool_result call_id=\"call_1\" status=\"ok\">\nCounts the artworks.\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("estimated cost 12.50, estimated rows 1\n"),
            "{text}"
        );
        assert!(
            text.contains("plan nodes, depth first: Aggregate, Seq Scan\n"),
            "{text}"
        );
        assert!(
            text.contains("hint seq_scan_large_table: scans tate.artworks\n"),
            "{text}"
        );
        assert!(text.ends_with("</tool_result>"), "{text}");
    }
}
