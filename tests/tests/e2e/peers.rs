//! Issue 16's side-by-side check: for Tate's simple count question, driven
//! by one scripted model, Quarry's agentic mode sends the model no more
//! bytes per call than the leaner of LangChain's SQL agent and LangGraph's
//! tutorial SQL agent (`quarry eval peers`, `eval/peers/agents.py`).
//!
//! Needs PostgreSQL, the embedding model (`QUARRY_MODEL_DIR`, as
//! `dev/quarry.toml` links with MiniLM) and PyPI once: the peers are
//! installed by `dev/peers.sh install` (a no-op when already installed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::Duration;

use quarry_bench::ask::ServerSections;
use quarry_eval::peers::{Peer, PeerSetup, PeersReport, QUARRY, run_peers_eval};
use quarry_eval::tokens::{QuestionSet, TokenQuestion};
use quarry_tests::{loaded_database, repo_root};

/// Tate's simple count question and its gold SQL (`demo/golden/tate.json`'s first pair).
const QUESTION: &str = "How many artworks are in the Tate collection?";
const SQL: &str = "SELECT count(*) AS artworks FROM tate.artworks";

/// Quarry (configured as `dev/quarry.toml`, over a Tate slice) and both
/// peers on the count question.
async fn count_question_side_by_side() -> PeersReport {
    // before anything runs on this runtime: blocking here holds up nothing
    let install = std::process::Command::new(repo_root().join("dev/peers.sh"))
        .arg("install")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(install.status.success(), "dev/peers.sh install failed");
    let python = String::from_utf8(install.stdout).unwrap().trim().to_owned();

    let db = loaded_database().await;
    let mut sections = ServerSections::load(Some(&repo_root().join("dev/quarry.toml"))).unwrap();
    sections.database.url = db.url().to_owned();
    sections.sql.golden_path = Some(repo_root().join("demo/golden/tate.json"));
    sections.sql.semantic_path = Some(repo_root().join("demo/semantic/tate.toml"));
    let set = QuestionSet {
        name: "tate".to_owned(),
        schema: "tate".to_owned(),
        questions: vec![TokenQuestion {
            question: QUESTION.to_owned(),
            sql: SQL.to_owned(),
        }],
    };
    let setup = PeerSetup {
        python: python.into(),
        script: repo_root().join("eval/peers/agents.py"),
        database_url: db.url().to_owned(),
        timeout: Duration::from_secs(300),
    };
    run_peers_eval(&sections, &set, &setup, &Peer::ALL, None, false)
        .await
        .unwrap()
}

/// Every agent answered with the script's two calls (the query, then the
/// answer); the report's table, for messages.
fn assert_all_ran_the_script(report: &PeersReport) -> String {
    let table = report.table();
    let agents: Vec<&str> = report.agents.iter().map(|a| a.agent.as_str()).collect();
    assert_eq!(agents, [QUARRY, "LangChain", "LangGraph"], "{table}");
    for agent in &report.agents {
        let q = &agent.questions[0];
        assert_eq!(q.failure, None, "{}: {table}", agent.agent);
        assert_eq!(q.calls.len(), 2, "{}: {table}", agent.agent);
    }
    table
}

/// Asserts Quarry's `call`th call (from 0) is no larger than the leanest peer's.
fn assert_no_larger_than_the_leanest_peer(report: &PeersReport, call: usize, table: &str) {
    let bytes = report.agents[0].questions[0].calls[call];
    let leanest = report.leanest_peer(0, call).unwrap();
    assert!(
        bytes <= leanest,
        "call {}: Quarry sent {bytes} bytes, the leanest peer {leanest}\n{table}",
        call + 1
    );
}

/// Issue 16's target, every call of the simple count: the call that
/// carries the schema context and the one that carries the tool result.
/// With the whole schema (`schema_context_tokens = 0`) the first call is
/// 12.5 KB and this fails.
#[tokio::test]
async fn quarry_sends_no_more_bytes_per_call_than_the_leanest_python_sql_agent() {
    let report = count_question_side_by_side().await;
    let table = assert_all_ran_the_script(&report);
    for call in 0..2 {
        assert_no_larger_than_the_leanest_peer(&report, call, &table);
    }
}
