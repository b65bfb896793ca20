//! `quarry summaries`: build summaries by hand (in this process, with a
//! progress bar per kind) and read them from a running server over gRPC
//! (`show` an entity or a kind, `search` by meaning, `status` of each kind).
//! `quarry serve` builds on its own schedule (`summary.refresh_interval_secs`).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use quarry_proto::v1::{
    BuildReport, EntityMatchKind, GetSummariesRequest, ListSummaryKindsRequest,
    SearchSummariesRequest, Summary, summary_service_client::SummaryServiceClient,
};
use quarry_summary::BuildOptions;
use tonic::transport::Channel;

use quarry_server::{Config, client::status_error};

use super::Remote;

/// Arguments of `quarry summaries`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Build now, in this process (progress bar per kind): compute every
    /// entity's figures, skip those whose data version is unchanged, rewrite
    /// and re-embed the others.
    Build {
        /// Only this kind (repeat for several).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Only these entity keys (repeat; needs exactly one --kind).
        #[arg(long = "entity")]
        entity_keys: Vec<String>,
        /// Recompute unchanged entities too.
        #[arg(long)]
        force: bool,
    },
    /// Print the summary of an entity (key or name; fuzzy), or a kind's summaries.
    Show {
        /// Entity key or name, e.g. "turner", "1950s"; omit to list --kind.
        entity: Option<String>,
        /// Kind, e.g. artist, movement, decade, collection.
        #[arg(long)]
        kind: Option<String>,
        /// Summaries listed for a kind.
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print the facts JSON too.
        #[arg(long)]
        facts: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Summaries closest in meaning to a query.
    Search {
        /// Query text.
        query: String,
        /// Only this kind (repeat for several).
        #[arg(long = "kind")]
        kinds: Vec<String>,
        /// Summaries wanted.
        #[arg(long, default_value_t = 5)]
        k: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Summaries per kind, failures, freshness and the latest build.
    Status {
        #[command(flatten)]
        remote: Remote,
    },
}

/// Builds summaries here, or reads them from a server.
///
/// # Errors
/// Build failures (including any entity that failed), connection and gRPC failures.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match args.action {
        Action::Build {
            kinds,
            entity_keys,
            force,
        } => {
            let config = super::load(config)?;
            let report = build(&config, kinds, entity_keys, force, true).await?;
            print!("{}", render_report(&report));
            if report.failed > 0 {
                anyhow::bail!("{} entities failed to build", report.failed);
            }
            Ok(())
        }
        Action::Show {
            entity,
            kind,
            limit,
            facts,
            remote,
        } => {
            show(
                &remote.server,
                &remote.token,
                kind,
                entity,
                limit,
                facts,
                &mut out,
            )
            .await
        }
        Action::Search {
            query,
            kinds,
            k,
            remote,
        } => search(&remote.server, &remote.token, query, kinds, k, &mut out).await,
        Action::Status { remote } => status(&remote.server, &remote.token, &mut out).await,
    }
}

/// Runs the builder now over `kinds` (all when empty), or over `entity_keys`
/// of one kind, recomputing unchanged entities too with `force`; draws a
/// progress bar per kind on stderr when `progress`. Returns the report.
///
/// # Errors
/// Invalid definitions (named), another build holding the lock, database errors.
pub async fn build(
    config: &Config,
    kinds: Vec<String>,
    entity_keys: Vec<String>,
    force: bool,
    progress: bool,
) -> anyhow::Result<BuildReport> {
    let tool = quarry_server::summary_tool(
        config,
        &config.database.pools(),
        quarry_server::embedder(config).await?,
    )
    .await?
    .context("no [summary] section in the configuration: no summary kinds to build")?;
    let bar = quarry_server::progress::bar(progress, 0, "summaries");
    let report = tool
        .build(
            BuildOptions {
                kinds,
                entity_keys,
                force,
                trigger: "cli".to_string(),
            },
            &|p| {
                bar.set_message(p.kind.clone());
                bar.set_length(p.total);
                bar.set_position(p.done);
            },
        )
        .await?;
    bar.finish_and_clear();
    Ok(report.into())
}

/// The report as lines: counts, time, then each failure.
pub fn render_report(report: &BuildReport) -> String {
    let seconds = match (&report.started_at, &report.finished_at) {
        (Some(a), Some(b)) => (b.seconds - a.seconds) as f64 + f64::from(b.nanos - a.nanos) / 1e9,
        _ => 0.0,
    };
    let mut out = format!(
        "summaries ({}): {} entities, {} built, {} unchanged, {} failed, {} removed, {} embedded in {seconds:.1} s\n",
        if report.trigger.is_empty() {
            "build"
        } else {
            report.trigger.as_str()
        },
        report.entities,
        report.built,
        report.unchanged,
        report.failed,
        report.removed,
        report.embedded
    );
    for w in &report.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    for f in &report.failures {
        let tenant = if f.tenant.is_empty() {
            String::new()
        } else {
            format!(" [tenant {}]", f.tenant)
        };
        out.push_str(&format!(
            "  failed: {}{tenant} {} ({}): {}\n",
            f.kind, f.entity_key, f.entity_name, f.error
        ));
    }
    out
}

async fn client(server: &str) -> anyhow::Result<SummaryServiceClient<Channel>> {
    SummaryServiceClient::connect(server.to_string())
        .await
        .with_context(|| format!("cannot connect to {server}"))
}

/// `2026-11-21 04:52:48 UTC`, or `missing` without a time.
pub(crate) fn utc(t: Option<&prost_types::Timestamp>, missing: &str) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(
            || missing.to_string(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

fn write_summary(out: &mut impl Write, s: &Summary, facts: bool) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} — {} ({} {}); computed {}, checked {} s ago{}",
        s.id,
        s.entity_name,
        s.kind,
        s.entity_key,
        utc(s.computed_at.as_ref(), "?"),
        s.age_seconds,
        if s.last_error.is_empty() {
            String::new()
        } else {
            format!("; latest build failed: {}", s.last_error)
        }
    )?;
    writeln!(out, "  {}", s.text)?;
    if facts {
        let pretty = serde_json::from_str::<serde_json::Value>(&s.facts_json)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| s.facts_json.clone());
        for line in pretty.lines() {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

/// Prints the summary of `entity` (key or name, fuzzy; within `kind` if
/// given), or with no entity the summaries of `kind`; with `facts`, the
/// facts JSON too.
///
/// # Errors
/// Connection failures and the server's status (NOT_FOUND names the
/// closest entities).
pub async fn show(
    server: &str,
    token: &str,
    kind: Option<String>,
    entity: Option<String>,
    limit: u32,
    facts: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let response = client(server)
        .await?
        .get_summaries(quarry_server::client::bearer_request(
            GetSummariesRequest {
                kind: kind.unwrap_or_default(),
                entity: entity.unwrap_or_default(),
                limit,
                offset: 0,
            },
            token,
        )?)
        .await
        .map_err(status_error)?
        .into_inner();
    let matched = EntityMatchKind::try_from(response.r#match).unwrap_or_default();
    if matched == EntityMatchKind::Fuzzy {
        writeln!(out, "(closest name match)")?;
    }
    for s in &response.summaries {
        write_summary(out, s, facts)?;
    }
    if matched == EntityMatchKind::Listing {
        writeln!(
            out,
            "({} of {} summaries)",
            response.summaries.len(),
            response.total
        )?;
    }
    if !response.alternatives.is_empty() {
        let names: Vec<String> = response
            .alternatives
            .iter()
            .map(|c| format!("{} ({} {})", c.name, c.kind, c.key))
            .collect();
        writeln!(out, "also close: {}", names.join("; "))?;
    }
    Ok(())
}

/// Prints the summaries closest in meaning to `query`.
///
/// # Errors
/// Connection failures and the server's status.
pub async fn search(
    server: &str,
    token: &str,
    query: String,
    kinds: Vec<String>,
    k: u32,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let response = client(server)
        .await?
        .search_summaries(quarry_server::client::bearer_request(
            SearchSummariesRequest { query, kinds, k },
            token,
        )?)
        .await
        .map_err(status_error)?
        .into_inner();
    for s in &response.summaries {
        write!(out, "[{:.3}] ", s.score)?;
        write_summary(out, s, false)?;
    }
    writeln!(
        out,
        "({} summaries; retrieval: {}, covering {} of {} summaries)",
        response.summaries.len(),
        response.retrieval,
        response.covered,
        response.searched
    )?;
    Ok(())
}

/// Prints each kind's summary count, failures and stalest check, and the
/// latest build.
///
/// # Errors
/// Connection failures and the server's status.
pub async fn status(server: &str, token: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let response = client(server)
        .await?
        .list_summary_kinds(quarry_server::client::bearer_request(
            ListSummaryKindsRequest {},
            token,
        )?)
        .await
        .map_err(status_error)?
        .into_inner();
    for k in &response.kinds {
        writeln!(
            out,
            "{}: {} summaries ({} failed), one per {}; oldest check {}",
            k.name,
            k.summaries,
            k.failed,
            k.entity,
            utc(k.oldest_checked_at.as_ref(), "never")
        )?;
    }
    match &response.last_build {
        Some(report) => write!(out, "last build: {}", render_report(report))?,
        None => writeln!(out, "no build has finished yet")?,
    }
    Ok(())
}
