//! `quarry search`: search a collection over gRPC and print the hits.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use quarry_orchestrator::render;

use super::{Remote, SearchMode};

/// Arguments of `quarry search`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Query text.
    pub query: String,
    /// Collection name.
    #[arg(long, default_value = "artworks")]
    pub collection: String,
    /// Filter as JSON, e.g. '{"range": {"field": "acquisition_year", "gte": 1900}}'
    /// (operators eq, in, range with gte/gt/lte/lt, prefix, and, or, not).
    #[arg(long)]
    pub filter: Option<String>,
    /// Retrievers.
    #[arg(long, value_enum, default_value_t = SearchMode::Hybrid)]
    pub mode: SearchMode,
    /// Hits wanted.
    #[arg(long, default_value_t = 10)]
    pub k: u32,
    /// Fields to return (repeat); default every stored field.
    #[arg(long = "field")]
    pub fields: Vec<String>,
    #[command(flatten)]
    pub remote: Remote,
}

/// Parses the filter (the JSON syntax the model uses) and prints the hits.
///
/// # Errors
/// A filter that is not valid JSON or not a valid filter; as [`search`].
pub async fn run(args: Args, _config: Option<&Path>) -> anyhow::Result<()> {
    let filter = match args.filter {
        None => None,
        Some(json) => {
            // The same JSON filter syntax the model uses.
            let arguments = serde_json::json!({
                "collection": args.collection,
                "query": args.query,
                "filter": serde_json::from_str::<serde_json::Value>(&json)
                    .map_err(|e| anyhow::anyhow!("--filter is not JSON: {e}"))?,
            });
            quarry_orchestrator::search::request_from_arguments(&arguments.to_string())
                .map_err(|e| anyhow::anyhow!("--filter: {e}"))?
                .filter
        }
    };
    let request = quarry_proto::v1::SearchRequest {
        collection: args.collection,
        query: args.query,
        filter,
        mode: quarry_proto::v1::SearchMode::from(args.mode) as i32,
        k: args.k,
        fields: args.fields,
    };
    search(
        &args.remote.server,
        &args.remote.token,
        request,
        &mut std::io::stdout(),
    )
    .await
}

/// Searches `request.collection` over gRPC and prints the hits (key, score,
/// each retriever's rank, the returned fields), then a summary line.
///
/// # Errors
/// Connection failures and the server's status (its message names the
/// field at fault for bad requests).
pub async fn search(
    server: &str,
    token: &str,
    request: quarry_proto::v1::SearchRequest,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    use quarry_proto::v1::{SearchMode, search_service_client::SearchServiceClient};
    let mut client = SearchServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    let call = quarry_server::client::bearer_request(request, token)?;
    let response = client
        .search(call)
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    for (i, hit) in response.hits.iter().enumerate() {
        let ranks = [("bm25", &hit.bm25), ("vector", &hit.vector)]
            .iter()
            .filter_map(|(name, s)| {
                s.as_ref()
                    .map(|s| format!("{name} #{} {:.3}", s.rank, s.score))
            })
            .collect::<Vec<_>>()
            .join(", ");
        writeln!(
            out,
            "{:>3}. {} score {:.4} ({ranks})",
            i + 1,
            hit.key,
            hit.score
        )?;
        let mut fields: Vec<_> = hit.fields.iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in fields {
            let text = render::value_text(value);
            if !text.is_empty() && text != "NULL" {
                let cut: String = text.chars().take(160).collect();
                writeln!(out, "     {name}: {cut}")?;
            }
        }
    }
    let mode = SearchMode::try_from(response.mode).unwrap_or(SearchMode::Unspecified);
    writeln!(
        out,
        "» {} hits, mode {}, {} vector search; {} documents ({} embedded); {:.1} ms (query embedding {:.1} ms)",
        response.hits.len(),
        mode.as_str_name(),
        if response.exact_vector_search {
            "exact"
        } else {
            "HNSW/none"
        },
        response.documents,
        response.embedded_documents,
        response.total_ms,
        response.embed_ms
    )?;
    Ok(())
}
