//! `quarry eval` (feature `dev-tools`): evaluate a tool against a benchmark
//! with `quarry-eval`.

use std::path::{Path, PathBuf};

use super::SearchMode;

/// Arguments of `quarry eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// Text-to-SQL on a Spider-format folder: schema linking, validator false
    /// rejects on gold SQL, and gold SQL through the pipeline vs. run directly.
    Sql {
        /// Folder with tables.json, dev.json and optionally database/<db>/<db>.sqlite.
        #[arg(long)]
        dataset: PathBuf,
        /// SQL dialect of the gold queries.
        #[arg(long, value_enum, default_value_t = quarry_eval::GoldDialect::Sqlite)]
        gold_dialect: quarry_eval::GoldDialect,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Database to load into; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Evaluate only the first N questions.
        #[arg(long)]
        limit: Option<usize>,
        /// Also rank schema elements by embedding similarity (local MiniLM).
        #[arg(long)]
        embeddings: bool,
    },
    /// Retrieval on a BEIR-format folder (corpus.jsonl, queries*.jsonl,
    /// qrels*.tsv): nDCG@10 and recall@100 per mode, through the real
    /// search stack (PostgreSQL sidecar + pgvector, tantivy).
    Search {
        /// BEIR folder.
        #[arg(long)]
        dataset: PathBuf,
        /// Split whose queries and judgements are used.
        #[arg(long, default_value = "test")]
        split: String,
        /// Modes to measure.
        #[arg(long, value_delimiter = ',', default_values = ["bm25", "vector", "hybrid"])]
        modes: Vec<SearchMode>,
        /// Print one JSON object keyed by mode instead of a table.
        #[arg(long)]
        json: bool,
        /// Database to load into; default `database.url` from the configuration.
        #[arg(long)]
        database_url: Option<String>,
        /// Where the tantivy index is kept.
        #[arg(long, default_value = ".dev/eval-index")]
        index_dir: PathBuf,
        /// Evaluate only the first N judged queries.
        #[arg(long)]
        limit: Option<usize>,
        /// Shares of the corpus to embed, e.g. `0.01,0.1,0.5`: nDCG@10 per
        /// mode with only that share embedded, in a collection of its own
        /// (`quarry_eval::search::run_coverage_eval`).
        #[arg(long, value_delimiter = ',')]
        coverage: Vec<f64>,
        /// Candidates each retriever gives hybrid fusion (`[search]
        /// candidates`); default the service's default.
        #[arg(long)]
        candidates: Option<usize>,
    },
    /// What agentic mode sends the model, per question and per model call:
    /// prompt bytes and tokens, the schema context's share of the full
    /// schema and of the prompt, and the gold tables/columns it holds — on
    /// Tate's demo questions and/or Spider, with a scripted model.
    Tokens {
        /// Tate's golden pairs (schema `tate` of the configured database).
        #[arg(long, default_value = "demo/golden/tate.json")]
        tate: PathBuf,
        /// Skip Tate.
        #[arg(long)]
        no_tate: bool,
        /// A Spider folder (tables.json, dev.json, database/); loaded into
        /// the configured database as `quarry eval sql` does.
        #[arg(long)]
        spider: Option<PathBuf>,
        /// At most this many Spider questions per database.
        #[arg(long)]
        per_db: Option<usize>,
        /// At most this many Spider questions in all.
        #[arg(long)]
        limit: Option<usize>,
        /// Write every request body the model received to this folder,
        /// one pretty-printed JSON file a call (`<set>-<question>-<call>.json`),
        /// to compare them with another agent's.
        #[arg(long, value_name = "DIR")]
        dump_requests: Option<PathBuf>,
        /// Leave one Spider database out: run every linking setting of
        /// `quarry_eval::loo::grid`, choose the setting for each database on
        /// the others, and report in-sample and out-of-sample figures
        /// (Spider sets only).
        #[arg(long)]
        leave_one_out: bool,
        /// Link without the configured semantic layer (`sql.semantic_path`),
        /// to measure what it changes.
        #[arg(long)]
        no_semantic: bool,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Request bytes per model call of Quarry's agentic mode next to
    /// LangChain's SQL agent and LangGraph's SQL agent (eval/peers/agents.py)
    /// on Tate's demo questions, all driven by one scripted model. Install
    /// the peers first: `dev/peers.sh install`.
    Peers {
        /// Tate's golden pairs (schema `tate` of the configured database).
        #[arg(long, default_value = "demo/golden/tate.json")]
        tate: PathBuf,
        /// Only the first N questions.
        #[arg(long)]
        limit: Option<usize>,
        /// The Python with the peers installed (what `dev/peers.sh install` prints).
        #[arg(long, default_value = ".dev/peers/bin/python")]
        python: PathBuf,
        /// The peers' script.
        #[arg(long, default_value = "eval/peers/agents.py")]
        script: PathBuf,
        /// Longest each peer may take for all its questions, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// Write every request body under this folder: quarry/, langchain/,
        /// langgraph/, one pretty-printed JSON file a call
        /// (`<set>-<question>-<call>.json`).
        #[arg(long, value_name = "DIR")]
        dump_requests: Option<PathBuf>,
        /// Print one JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the evaluation and prints its report (a table, or JSON).
///
/// # Errors
/// Unreadable data sets, database errors, embedder failures.
pub async fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    match args.what {
        What::Sql {
            dataset,
            gold_dialect,
            json,
            database_url,
            limit,
            embeddings,
        } => {
            let database_url = match database_url {
                Some(url) => url,
                None => quarry_eval::configured_database_url(config)?,
            };
            let options = quarry_eval::EvalOptions {
                dataset,
                gold_dialect,
                database_url,
                limit,
                embeddings,
            };
            let report = quarry_eval::run_sql_eval(&options).await?;
            super::print_report(json, || report.to_json(), || format!("{report}\n"))
        }
        What::Search {
            dataset,
            split,
            modes,
            json,
            database_url,
            index_dir,
            limit,
            coverage,
            candidates,
        } => {
            let database_url = match database_url {
                Some(url) => url,
                None => quarry_eval::configured_database_url(config)?,
            };
            let modes: Vec<quarry_search::Mode> = modes.into_iter().map(Into::into).collect();
            let embedder = if modes.iter().any(|m| *m != quarry_search::Mode::Bm25) {
                let embedder = tokio::task::spawn_blocking(|| {
                    quarry_llm::embed::embedder_from_config(
                        &quarry_llm::embed::EmbeddingConfig::default(),
                    )
                })
                .await??;
                Some(embedder)
            } else {
                None
            };
            let options = quarry_eval::search::SearchEvalOptions {
                dataset,
                split,
                database_url,
                index_dir,
                modes,
                limit,
                embedder,
                search: {
                    let defaults = quarry_search::SearchConfig::default();
                    quarry_search::SearchConfig {
                        candidates: candidates.unwrap_or(defaults.candidates),
                        ..defaults
                    }
                },
                progress: !json,
            };
            if !coverage.is_empty() {
                let report = quarry_eval::search::run_coverage_eval(&options, &coverage).await?;
                return super::print_report(json, || report.to_json(), || report.table());
            }
            let report = quarry_eval::search::run_search_eval(&options).await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
        What::Tokens {
            tate,
            no_tate,
            spider,
            per_db,
            limit,
            dump_requests,
            leave_one_out,
            no_semantic,
            json,
        } => {
            let mut sections = quarry_bench::ask::ServerSections::load(config)?;
            if no_semantic {
                sections.sql.semantic_path = None;
            }
            let mut sets = Vec::new();
            if !no_tate {
                sets.push(quarry_eval::tokens::tate_set(&tate)?);
            }
            if let Some(spider) = spider {
                sets.extend(
                    quarry_eval::tokens::spider_sets(
                        &spider,
                        &sections.database.url,
                        per_db,
                        limit,
                    )
                    .await?,
                );
            }
            if leave_one_out {
                sets.retain(|s| s.name.starts_with("spider/"));
                let report = quarry_eval::loo::run_leave_one_out(&sections, &sets, !json).await?;
                return super::print_report(json, || report.to_json(), || report.table());
            }
            let report = quarry_eval::tokens::run_token_eval(
                &sections,
                &sets,
                dump_requests.as_deref(),
                !json,
            )
            .await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
        What::Peers {
            tate,
            limit,
            python,
            script,
            timeout_secs,
            dump_requests,
            json,
        } => {
            let sections = quarry_bench::ask::ServerSections::load(config)?;
            let mut set = quarry_eval::tokens::tate_set(&tate)?;
            if let Some(limit) = limit {
                set.questions.truncate(limit);
            }
            anyhow::ensure!(
                python.exists(),
                "{} not found: install the peers with dev/peers.sh install",
                python.display()
            );
            let setup = quarry_eval::peers::PeerSetup {
                python,
                script,
                database_url: sections.database.url.clone(),
                timeout: std::time::Duration::from_secs(timeout_secs),
            };
            let report = quarry_eval::peers::run_peers_eval(
                &sections,
                &set,
                &setup,
                &quarry_eval::peers::Peer::ALL,
                dump_requests.as_deref(),
                !json,
            )
            .await?;
            super::print_report(json, || report.to_json(), || report.table())
        }
    }
}
