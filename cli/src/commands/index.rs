//! `quarry index`: run the search index sync by hand (backfill with a
//! progress bar, pending changes, embeddings, tantivy index) and show its
//! state. `quarry serve` does the same continuously (`server.run_sync`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quarry_search_sync::{Status, Syncer};
use quarry_server::progress::{bar, embed_with_progress};

use quarry_server::Config;

/// Arguments of `quarry index`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Install triggers, backfill (resumable, with a progress bar), apply
    /// pending changes, embed pending documents, update the tantivy index.
    Sync {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
        /// Skip embedding (BM25 works at once; `serve` embeds later).
        #[arg(long)]
        no_embed: bool,
    },
    /// Drop a collection's sidecar (documents, vectors, sync state); the next
    /// sync starts over with the embedder configured then.
    Reset {
        /// The collection.
        collection: String,
    },
    /// Documents, embeddings, backfill checkpoint and change backlog per collection.
    Status {
        /// Only this collection.
        #[arg(long)]
        collection: Option<String>,
    },
}

/// Syncs, resets or shows the search index of the configured collections.
///
/// # Errors
/// Configuration, database, index and embedding errors.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let config = super::load(config)?;
    let statuses = match args.action {
        Action::Sync {
            collection,
            no_embed,
        } => {
            let options = SyncOptions {
                collection,
                no_embed,
                progress: true,
            };
            sync(&config, &options).await?
        }
        Action::Reset { collection } => {
            reset(&config, &collection).await?;
            println!("{collection}: reset; the next sync (or `quarry serve`) rebuilds it");
            return Ok(());
        }
        Action::Status { collection } => status(&config, collection.as_deref()).await?,
    };
    print!("{}", render(&statuses));
    Ok(())
}

/// What `quarry index sync` does.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Only this collection (default: all configured).
    pub collection: Option<String>,
    /// Skip embedding (BM25 is usable at once; `serve` embeds later).
    pub no_embed: bool,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

fn selected(config: &Config, only: Option<&str>) -> anyhow::Result<quarry_search::SearchConfig> {
    let mut search = config
        .search
        .clone()
        .context("no [search] section in the configuration: no collections to index")?;
    if let Some(name) = only {
        let known: Vec<String> = search.collections.iter().map(|c| c.name.clone()).collect();
        search.collections.retain(|c| c.name == name);
        if search.collections.is_empty() {
            anyhow::bail!(
                "unknown collection {name:?}; configured: {}",
                known.join(", ")
            );
        }
    }
    Ok(search)
}

/// Installs triggers, backfills (resuming from the checkpoint), applies
/// pending changes, embeds pending documents and brings the tantivy index up
/// to date, for each selected collection; returns their status afterwards.
///
/// # Errors
/// Configuration, database, embedding and index errors.
pub async fn sync(config: &Config, options: &SyncOptions) -> anyhow::Result<Vec<Status>> {
    let search = selected(config, options.collection.as_deref())?;
    let pools = config.database.pools();
    let tool = quarry_server::search_tool(
        config,
        &pools,
        search,
        quarry_server::embedder(config).await?,
    )
    .await?;
    let mut statuses = Vec::new();
    for syncer in quarry_server::syncers(config, &pools, &tool)? {
        let name = syncer.collection().name.clone();
        syncer
            .install()
            .await
            .with_context(|| format!("{name}: install"))?;
        let bar = bar(options.progress, 0, &format!("{name} backfill"));
        let report = syncer
            .backfill(|p| {
                bar.set_length(p.total);
                bar.set_position(p.done);
            })
            .await
            .with_context(|| format!("{name}: backfill"))?;
        bar.finish_and_clear();
        if report.resumed_after.is_some() || report.rows > 0 {
            eprintln!(
                "{name}: backfill copied {} rows in {} batches{}, tombstoned {}",
                report.rows,
                report.batches,
                report
                    .resumed_after
                    .as_deref()
                    .map(|k| format!(" (resumed after key {k})"))
                    .unwrap_or_default(),
                report.tombstoned
            );
        }
        let outbox = syncer
            .drain_outbox()
            .await
            .with_context(|| format!("{name}: outbox"))?;
        if outbox.claimed > 0 {
            eprintln!("{name}: applied {} pending changes", outbox.claimed);
        }
        if !options.no_embed && tool.embedder().is_some() {
            let report = embed_with_progress(&syncer, options.progress, &name).await?;
            if report.docs > 0 {
                eprintln!(
                    "{name}: embedded {} documents ({} texts through the model, {} reused by content hash, {} unchanged)",
                    report.docs, report.embedded_texts, report.reused, report.unchanged
                );
            }
        }
        statuses.push(
            syncer
                .status()
                .await
                .with_context(|| format!("{name}: status"))?,
        );
    }
    tool.catch_up().await.context("index catch-up")?;
    Ok(statuses)
}

/// The sync state of each selected collection.
///
/// # Errors
/// Configuration and database errors.
pub async fn status(config: &Config, only: Option<&str>) -> anyhow::Result<Vec<Status>> {
    let search = selected(config, only)?;
    let pool = quarry_db::pool(
        &config.database.url,
        2,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let mut out = Vec::new();
    for (i, c) in search.collections.iter().enumerate() {
        let collection =
            quarry_search::Collection::from_config(c, &format!("search.collections[{i}]"))?;
        let syncer = Syncer::new(
            pool.clone(),
            config.database.url.clone(),
            Arc::new(collection),
            None,
            config.sync.clone(),
        );
        out.push(syncer.status().await?);
    }
    Ok(out)
}

/// Forgets a collection's sidecar: drops the table (documents and
/// vectors), its bookkeeping row and its queued changes, so the next sync
/// starts from nothing — with whatever embedder is configured then (the way
/// out of an embedder mismatch). Tantivy indexes notice the recreated table
/// and rebuild. Source tables and their triggers are left alone (the next
/// install replaces the triggers).
///
/// # Errors
/// An unknown collection; database errors.
pub async fn reset(config: &Config, name: &str) -> anyhow::Result<()> {
    let search = selected(config, Some(name))?;
    let collection =
        quarry_search::Collection::from_config(&search.collections[0], "search.collections[0]")?;
    let pool = quarry_db::pool(
        &config.database.url,
        1,
        Duration::from_millis(config.database.pool_wait_ms),
    )?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", collection.docs_table()))
        .await?;
    for table in ["quarry.search_collections", "quarry.search_outbox"] {
        let column = if table.ends_with("outbox") {
            "collection"
        } else {
            "name"
        };
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .await?
            .get(0);
        if exists {
            tx.execute(
                &format!("DELETE FROM {table} WHERE {column} = $1"),
                &[&collection.name],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// One line per collection.
pub fn render(statuses: &[Status]) -> String {
    let mut out = String::new();
    for s in statuses {
        out.push_str(&format!(
            "{}: {} documents ({} embedded, {} deleted), backfill {}, outbox backlog {}{}, embedder {}\n",
            s.collection,
            s.docs,
            s.embedded,
            s.deleted,
            if s.backfill_done {
                "done".to_owned()
            } else {
                format!("at key {}", s.backfill_checkpoint.as_deref().unwrap_or("(not started)"))
            },
            s.outbox_backlog,
            s.outbox_oldest.map(|d| format!(" (oldest {:.1} s)", d.as_secs_f64())).unwrap_or_default(),
            s.embedder.as_ref().map(|(m, d)| format!("{m} ({d} dims)")).unwrap_or_else(|| "none".into()),
        ));
    }
    out
}
