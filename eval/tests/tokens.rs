//! `quarry eval tokens` on a tiny question set: a real in-process server
//! over a fresh database, the scripted model, and the figures checked for
//! consistency — with the full schema in the prompt (agentic mode today,
//! and any schema under the whole-schema threshold), every gold table and
//! column is in the context and the schema lines are the whole compact
//! schema.
//!
//! Needs PostgreSQL (`QUARRY_TEST_DATABASE_URL`, set by `dev/test.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use quarry_bench::ask::ServerSections;
use quarry_db::testing::TestDb;
use quarry_eval::tokens::{QuestionSet, TokenQuestion, run_token_eval};

#[tokio::test]
async fn token_eval_reports_consistent_figures_for_the_full_schema() {
    let db = TestDb::create().await;
    quarry_db::migrate(db.pool()).await.unwrap();
    db.pool()
        .get()
        .await
        .unwrap()
        .batch_execute(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.customer (customer_id int PRIMARY KEY, name text, city text);
             CREATE TABLE shop.orders (order_id int PRIMARY KEY,
                 customer_id int REFERENCES shop.customer, amount numeric);
             INSERT INTO shop.customer VALUES (1, 'Ada', 'Paris'), (2, 'Bob', 'Lyon');
             INSERT INTO shop.orders VALUES (10, 1, 5.5), (11, 2, 7);
             ANALYZE;",
        )
        .await
        .unwrap();
    let mut sections = ServerSections::load(None).unwrap();
    sections.database.url = db.url().to_owned();
    // the baseline: the whole schema in every prompt
    sections.orchestrator.schema_context_tokens = 0;
    let set = QuestionSet {
        name: "tiny".to_owned(),
        schema: "shop".to_owned(),
        questions: vec![
            TokenQuestion {
                question: "Which customers live in Paris?".to_owned(),
                sql: "SELECT name FROM shop.customer WHERE city = 'Paris'".to_owned(),
            },
            TokenQuestion {
                question: "What did each customer order?".to_owned(),
                sql: "SELECT c.name, o.amount FROM shop.customer c \
                      JOIN shop.orders o ON o.customer_id = c.customer_id"
                    .to_owned(),
            },
        ],
    };

    let report = run_token_eval(&sections, &[set], None, false)
        .await
        .unwrap();

    let set = &report.sets[0];
    assert_eq!(set.tables, 2);
    assert!(set.full_schema_bytes > 0 && set.full_schema_tokens > 0);
    assert_eq!(set.questions.len(), 2);
    for q in &set.questions {
        assert_eq!(q.failure, None, "{}", q.question);
        // a tool call, then the answer
        assert_eq!(q.calls.len(), 2, "{}", q.question);
        for c in &q.calls {
            // the whole compact schema is in the prompt, line for line
            assert_eq!(c.schema_bytes, set.full_schema_bytes, "{c:?}");
            assert!(c.prompt_bytes > c.schema_bytes, "{c:?}");
            // the scripted model's estimate, ⌈chars / 4⌉ of messages and
            // tools, read back from the Ask's usage
            assert!(
                c.prompt_tokens > 0 && c.prompt_tokens as usize * 4 < c.prompt_bytes + 4,
                "{c:?}"
            );
            assert!(c.completion_tokens > 0, "{c:?}");
            assert_eq!(c.table_recall, Some(1.0), "{c:?}");
            assert_eq!(c.column_recall, Some(1.0), "{c:?}");
        }
        // the answer's prompt holds the tool result on top of the first
        assert!(q.calls[1].prompt_bytes > q.calls[0].prompt_bytes);
    }
    let summary = report.summary("tiny");
    assert_eq!((summary.questions, summary.calls), (2, 4));
    assert!((summary.share_of_full_schema - 1.0).abs() < 1e-9);
    assert!(summary.share_of_prompt > 0.0 && summary.share_of_prompt < 1.0);
    assert_eq!(summary.table_recall, Some(1.0));
    let json = report.to_json();
    assert_eq!(json["summary"]["tiny"]["calls"], 4);
    assert_eq!(
        json["sets"][0]["questions"][1]["calls"][0]["table_recall"],
        1.0
    );
    db.drop_db().await;
}
