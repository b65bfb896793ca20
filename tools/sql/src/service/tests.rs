use std::path::PathBuf;

use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_llm::{ModelConfig, OpenAiChatModel, Price};

use super::*;
use quarry_auth::{Caller, Principal};
use quarry_db::testing::TestDb;

fn caller() -> Caller {
    Caller::operator(Principal {
        tenant: "t1".into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    })
}

#[test]
fn extracts_fenced_or_bare_sql() {
    assert_eq!(
        extract_sql("Here:\n```sql\nSELECT 1;\n```\nDone"),
        "SELECT 1"
    );
    assert_eq!(extract_sql("```\nselect 2\n```"), "select 2");
    assert_eq!(extract_sql("  SELECT 3;  "), "SELECT 3");
    assert_eq!(extract_sql("```sql\nSELECT 4"), "SELECT 4");
}

const GOLDEN_QUESTION: &str = "How many items are in the shop?";
const GOLDEN_SQL: &str = "SELECT count(*) AS items FROM shop.items";

/// A database with `shop.items` (3 rows) and a golden file with one pair.
struct Shop {
    db: TestDb,
    golden: PathBuf,
}

impl Shop {
    async fn create() -> Self {
        let db = TestDb::create().await;
        db.pool()
            .get()
            .await
            .unwrap()
            .batch_execute(
                "CREATE SCHEMA shop;
                 CREATE TABLE shop.items (id int PRIMARY KEY, name text, price numeric);
                 INSERT INTO shop.items VALUES (1, 'kettle', 30), (2, 'mug', 5), (3, 'teapot', 45);",
            )
            .await
            .unwrap();
        let golden = std::env::temp_dir().join(format!(
            "quarry-sql-golden-{}.json",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(
            &golden,
            serde_json::json!([{"question": GOLDEN_QUESTION, "sql": GOLDEN_SQL}]).to_string(),
        )
        .unwrap();
        Self { db, golden }
    }

    fn tool(&self, models: SqlModels) -> SqlTool {
        let config = SqlToolConfig {
            schemas: vec!["shop".into()],
            golden_path: Some(self.golden.clone()),
            ..SqlToolConfig::default()
        };
        SqlTool::new(self.db.pool().clone(), config, models, None).unwrap()
    }

    async fn remove(self) {
        let _ = std::fs::remove_file(&self.golden);
        self.db.drop_db().await;
    }
}

fn model(server: &ScriptedServer, name: &str, price: Option<Price>) -> Arc<dyn ChatModel> {
    let config = ModelConfig {
        timeout_secs: 10,
        max_retries: 0,
        price,
        ..ModelConfig::new(server.base_url(), name)
    };
    Arc::new(OpenAiChatModel::with_api_key(config, None).unwrap())
}

fn price(input_per_million: f64, output_per_million: f64) -> Option<Price> {
    Some(Price {
        input_per_million,
        output_per_million,
    })
}

fn sql_reply(sql: &str) -> ScriptedTurn {
    ScriptedTurn::text(
        serde_json::json!({"sql": sql, "tables_used": ["shop.items"], "assumptions": []})
            .to_string(),
    )
}

fn verdict(ok: bool) -> ScriptedTurn {
    ScriptedTurn::text(serde_json::json!({"answers_question": ok, "problem": ""}).to_string())
}

/// `(task, model, prompt, completion)` of each call.
fn calls(generated: &Generated) -> Vec<(&str, &str, u32, u32)> {
    generated
        .model_calls
        .iter()
        .map(|c| {
            let u = c.usage.unwrap_or_default();
            (
                c.task,
                c.model.as_str(),
                u.prompt_tokens,
                u.completion_tokens,
            )
        })
        .collect()
}

fn assert_close(actual: Option<f64>, expected: f64, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no cost"));
    assert!(
        (actual - expected).abs() < 1e-12,
        "{what}: {actual} is not {expected}"
    );
}

#[tokio::test]
async fn golden_only_answers_from_golden_pairs_and_never_calls_the_model() {
    let shop = Shop::create().await;
    let server = ScriptedServer::start(vec![]).await;
    let tool = shop.tool(SqlModels::single(Some(model(&server, "m", None))));

    let hit = tool
        .generate(&caller(), GOLDEN_QUESTION, "", false, 0, true)
        .await
        .unwrap();
    assert_eq!(hit.source, SqlSource::Golden);
    assert_eq!(hit.sql.as_deref(), Some(GOLDEN_SQL));
    let rows = hit.result.expect("the golden sql ran");
    assert_eq!(rows.rows[0][0], crate::Cell::Int(3));
    assert!(hit.model_calls.is_empty(), "{:?}", hit.model_calls);

    let miss = tool
        .generate(
            &caller(),
            "Which item is the most expensive?",
            "",
            false,
            0,
            true,
        )
        .await
        .unwrap();
    assert_eq!(miss.sql, None);
    assert!(miss.result.is_none());
    assert!(
        miss.explanation.contains("golden_only") && miss.explanation.contains(GOLDEN_QUESTION),
        "{}",
        miss.explanation
    );
    assert!(miss.model_calls.is_empty());
    assert!(
        server.requests().is_empty(),
        "golden_only sent {:?}",
        server.requests()
    );

    // the same question without golden_only goes to the model
    server.push(sql_reply(
        "SELECT name FROM shop.items ORDER BY price DESC LIMIT 1",
    ));
    server.push(verdict(true));
    let by_model = tool
        .generate(
            &caller(),
            "Which item is the most expensive?",
            "",
            false,
            0,
            false,
        )
        .await
        .unwrap();
    assert_eq!(by_model.source, SqlSource::Model);
    assert_eq!(
        by_model.result.unwrap().rows[0][0],
        crate::Cell::Text("teapot".into())
    );
    assert_eq!(server.requests().len(), 2);
    shop.remove().await;
}

#[tokio::test]
async fn generation_and_judging_go_to_their_own_models_and_each_call_is_accounted() {
    let shop = Shop::create().await;
    let writer = ScriptedServer::start(vec![
        sql_reply("DELETE FROM shop.items").with_usage(1000, 100),
        sql_reply("SELECT count(*) AS n FROM shop.items WHERE price > 10").with_usage(2000, 200),
    ])
    .await;
    let judge = ScriptedServer::start(vec![verdict(true).with_usage(500, 10)]).await;
    let tool = shop.tool(SqlModels {
        sql: Some(model(&writer, "big-model", price(2.5, 10.0))),
        judge: Some(model(&judge, "small-model", price(0.15, 0.6))),
    });

    let generated = tool
        .generate(
            &caller(),
            "How many items cost more than 10?",
            "",
            false,
            0,
            false,
        )
        .await
        .unwrap();
    assert_eq!(generated.source, SqlSource::Model);
    assert_eq!(
        generated.result.as_ref().unwrap().rows[0][0],
        crate::Cell::Int(2)
    );
    assert_eq!(
        calls(&generated),
        [
            (TASK_SQL, "big-model", 1000, 100),
            (TASK_SQL, "big-model", 2000, 200),
            (TASK_JUDGE, "small-model", 500, 10),
        ]
    );
    // each priced at its own model's rates, by hand:
    // 1000 × 2.5 + 100 × 10 = 3500 → $0.0035
    // 2000 × 2.5 + 200 × 10 = 7000 → $0.007
    // 500 × 0.15 + 10 × 0.6 = 81   → $0.000081
    for (call, expected) in generated.model_calls.iter().zip([0.0035, 0.007, 0.000081]) {
        assert_close(call.cost_usd, expected, call.task);
    }

    assert_eq!(writer.requests().len(), 2, "generate, repair");
    let judged = judge.requests();
    assert_eq!(judged.len(), 1, "the judge call goes to the judge model");
    assert_eq!(judged[0]["model"], "small-model");
    assert_eq!(
        judged[0]["response_format"]["json_schema"]["name"],
        "verdict"
    );

    let proto = crate::grpc::model_calls_to_proto(&generated.model_calls);
    let steps: Vec<(u32, &str, u64, bool)> = proto
        .iter()
        .map(|c| (c.step, c.task.as_str(), c.total_tokens, c.cost_known))
        .collect();
    assert_eq!(
        steps,
        [
            (1, "sql", 1100, true),
            (2, "sql", 2200, true),
            (3, "judge", 510, true)
        ]
    );
    assert_eq!(proto[2].model, "small-model");
    shop.remove().await;
}

#[tokio::test]
async fn failed_and_unpriced_calls_are_accounted_and_no_judge_means_no_judging() {
    let shop = Shop::create().await;
    let writer = ScriptedServer::start(vec![
        ScriptedTurn::error(500, "overloaded").with_delay(Duration::from_millis(50)),
        sql_reply("SELECT max(price) AS top FROM shop.items").with_usage(300, 30),
    ])
    .await;
    let tool = shop.tool(SqlModels {
        sql: Some(model(&writer, "unpriced", None)),
        judge: None,
    });

    let failed = tool
        .generate(&caller(), "What is the highest price?", "", false, 0, false)
        .await
        .unwrap();
    assert_eq!(failed.sql, None);
    assert_eq!(calls(&failed), [(TASK_SQL, "unpriced", 0, 0)]);
    let call = &failed.model_calls[0];
    assert_eq!((call.usage, call.cost_usd), (None, None));
    assert!(call.elapsed >= Duration::from_millis(50), "{call:?}");

    let accepted = tool
        .generate(&caller(), "What is the highest price?", "", false, 0, false)
        .await
        .unwrap();
    assert!(accepted.sql.is_some(), "{:?}", accepted.attempts);
    assert_eq!(
        calls(&accepted),
        [(TASK_SQL, "unpriced", 300, 30)],
        "no judge call without a judge model"
    );
    assert_eq!(
        accepted.model_calls[0].cost_usd, None,
        "no price: cost unknown"
    );
    assert_eq!(writer.requests().len(), 2);
    shop.remove().await;
}

/// A caller whose role tags `shop.items.name` as PII.
fn pii_caller() -> Caller {
    let role = quarry_auth::RoleConfig {
        scopes: vec!["sql:query".into()],
        tables: vec!["shop.*".into()],
        pii: vec!["shop.items.name".into()],
        ..quarry_auth::RoleConfig::default()
    };
    let policy = quarry_auth::Policy::new(&quarry_auth::PolicyConfig {
        hash_salt: String::new(),
        roles: [("clerk".to_string(), role)].into_iter().collect(),
    })
    .unwrap();
    role_caller(&policy, "t1", "clerk")
}

#[tokio::test]
async fn the_sql_writer_and_the_judge_see_placeholders_and_the_sql_runs_with_the_value() {
    let shop = Shop::create().await;
    let server = ScriptedServer::start(vec![
        // the writer filters on the placeholder it was shown
        sql_reply(
            "SELECT name, price FROM shop.items WHERE name <> '<EMAIL_1>' ORDER BY price DESC LIMIT 2",
        ),
        verdict(true),
    ])
    .await;
    let tool = shop.tool(SqlModels::single(Some(model(&server, "m", None))));

    let generated = tool
        .generate(
            &pii_caller(),
            "Which two items are dearest, apart from what ada@example.com bought?",
            "",
            false,
            0,
            false,
        )
        .await
        .unwrap();

    let sql = generated.sql.expect("sql");
    assert!(
        sql.contains("'ada@example.com'"),
        "restored for running: {sql}"
    );
    let rows = generated.result.expect("the sql ran");
    assert_eq!(rows.rows[0][0], crate::Cell::Text("teapot".into()));
    let bodies = server.requests();
    assert_eq!(bodies.len(), 2, "writer and judge");
    for body in &bodies {
        let body = body.to_string();
        for planted in ["ada@example.com", "teapot", "kettle"] {
            assert!(!body.contains(planted), "{planted} sent: {body}");
        }
    }
    let judge = bodies[1].to_string();
    // the rows are data inside <result>, escaped like any data
    assert!(
        judge.contains("<EMAIL_1>") && judge.contains("&lt;NAME_2&gt;"),
        "the judge sees the sql and the rows as placeholders: {judge}"
    );
    assert_eq!(judge.matches("</result>").count(), 1, "{judge}");
    shop.remove().await;
}

/// `shop` with a semantic layer file holding `layer`.
async fn shop_with_layer(shop: &Shop, layer: &str) -> (SqlTool, PathBuf) {
    let path = std::env::temp_dir().join(format!(
        "quarry-sql-semantic-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(&path, layer).unwrap();
    let config = SqlToolConfig {
        schemas: vec!["shop".into()],
        semantic_path: Some(path.clone()),
        catalog_check_secs: 0,
        ..SqlToolConfig::default()
    };
    let tool = SqlTool::new(shop.db.pool().clone(), config, SqlModels::default(), None).unwrap();
    (tool, path)
}

#[tokio::test]
async fn start_up_refuses_a_semantic_layer_that_does_not_match_the_catalog() {
    let shop = Shop::create().await;
    let (tool, path) = shop_with_layer(
        &shop,
        "[[terms]]\nname = \"cheap items\"\nsql = \"items.cost < 10\"\n",
    )
    .await;
    let error = tool.check_semantic().await.unwrap_err().to_string();
    assert!(error.contains(&path.display().to_string()), "{error}");
    assert!(error.contains("terms[0] \"cheap items\".sql"), "{error}");
    assert!(
        error.contains("no column \"cost\" in shop.items"),
        "{error}"
    );
    let _ = std::fs::remove_file(&path);
    let (tool, path) = shop_with_layer(
        &shop,
        "[[terms]]\nname = \"cheap items\"\nsql = \"items.price < 10\"\n",
    )
    .await;
    tool.check_semantic().await.unwrap();
    let _ = std::fs::remove_file(&path);
    shop.remove().await;
}

#[tokio::test]
async fn the_schema_context_carries_a_matched_business_term_and_its_sql() {
    let shop = Shop::create().await;
    let question = "Which bargains can I buy?";
    let (tool, path) = shop_with_layer(
        &shop,
        "[[terms]]\nname = \"bargains\"\nsql = \"items.price < 10\"\n",
    )
    .await;
    let (context, _) = tool.schema_context(&caller(), question, 200).await.unwrap();
    assert!(context.contains("shop.items("), "{context}");
    assert!(
        context.contains("-- term bargains: items.price < 10"),
        "{context}"
    );
    let _ = std::fs::remove_file(&path);
    // without the layer, nothing in the question names the table or a column
    let (tool, path) = shop_with_layer(&shop, "").await;
    let (context, _) = tool.schema_context(&caller(), question, 200).await.unwrap();
    assert!(!context.contains("bargains"), "{context}");
    let _ = std::fs::remove_file(&path);
    shop.remove().await;
}

/// A policy with two roles: `all` sees every column of `shop.*`,
/// `no_price` the same without `shop.items.price`.
fn two_role_policy() -> quarry_auth::Policy {
    let all = quarry_auth::RoleConfig {
        scopes: vec!["sql:query".into()],
        tables: vec!["shop.*".into()],
        ..quarry_auth::RoleConfig::default()
    };
    let no_price = quarry_auth::RoleConfig {
        deny_columns: vec!["shop.items.price".into()],
        ..all.clone()
    };
    quarry_auth::Policy::new(&quarry_auth::PolicyConfig {
        hash_salt: String::new(),
        roles: [("all".to_string(), all), ("no_price".to_string(), no_price)]
            .into_iter()
            .collect(),
    })
    .unwrap()
}

/// A caller of `tenant` holding `role` of `policy` (its subject named as
/// the role).
fn role_caller(policy: &quarry_auth::Policy, tenant: &str, role: &str) -> Caller {
    let principal = Principal {
        tenant: tenant.into(),
        subject: role.into(),
        roles: vec![role.into()],
        scopes: vec![],
    };
    let grant = policy.grant(&principal);
    Caller::new(principal).with_grant(Arc::new(grant))
}

#[tokio::test]
async fn a_cached_schema_context_is_only_served_to_grants_that_show_the_same() {
    let shop = Shop::create().await;
    let tool = shop.tool(SqlModels::single(None));
    let policy = two_role_policy();
    let question = "What is the price of each item?";
    let (seen, _) = tool
        .schema_context(&role_caller(&policy, "t1", "all"), question, 0)
        .await
        .unwrap();
    assert!(seen.contains("price"), "{seen}");
    // the same question at once, same policy, by a role that may not see
    // the column: the cached context of the first caller must not be served
    let (denied, _) = tool
        .schema_context(&role_caller(&policy, "t1", "no_price"), question, 0)
        .await
        .unwrap();
    assert!(denied.contains("shop.items("), "{denied}");
    assert!(!denied.contains("price"), "{denied}");
    // and the first caller's is served again, as it was
    let (again, _) = tool
        .schema_context(&role_caller(&policy, "t1", "all"), question, 0)
        .await
        .unwrap();
    assert_eq!(again, seen);
    // a new policy (a reload) that takes the column from `all`: a new key,
    // not the context cached under the old policy
    let reloaded = quarry_auth::Policy::new(&quarry_auth::PolicyConfig {
        hash_salt: String::new(),
        roles: [(
            "all".to_string(),
            quarry_auth::RoleConfig {
                scopes: vec!["sql:query".into()],
                tables: vec!["shop.*".into()],
                deny_columns: vec!["shop.items.price".into()],
                ..quarry_auth::RoleConfig::default()
            },
        )]
        .into_iter()
        .collect(),
    })
    .unwrap();
    let (after_reload, _) = tool
        .schema_context(&role_caller(&reloaded, "t1", "all"), question, 0)
        .await
        .unwrap();
    assert!(!after_reload.contains("price"), "{after_reload}");
    shop.remove().await;
}
