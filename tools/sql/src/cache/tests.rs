use std::sync::Arc;
use std::time::Duration;

use quarry_auth::{Caller, Policy, PolicyConfig, Principal, RoleConfig};
use quarry_db::testing::TestDb;

use super::*;
use crate::service::{SqlModels, SqlTool, SqlToolConfig};
use crate::{Cell, ValidationPolicy, validate};
use quarry_db::supervisor::TaskStatus;

const WAIT: Duration = Duration::from_secs(10);

/// A database with `shop.items` under row-level security on
/// `quarry.tenant` and `quarry.subject`, read through the role `reader`
/// (a superuser would bypass the policy), and a view over it.
struct Shop {
    db: TestDb,
    reader: String,
    /// One policy for every caller (one policy version, as in a server).
    policy: Policy,
}

impl Shop {
    async fn create() -> Self {
        let db = TestDb::create().await;
        quarry_db::migrate(db.pool()).await.unwrap();
        let reader = format!("reader_{}", uuid::Uuid::new_v4().simple());
        db.pool()
            .get()
            .await
            .unwrap()
            .batch_execute(&format!(
                "CREATE ROLE {reader} NOLOGIN;
                 CREATE SCHEMA shop;
                 CREATE TABLE shop.items (tenant text, owner text, name text);
                 INSERT INTO shop.items VALUES
                   ('a', 'alice', 'a-alice'), ('b', 'alice', 'b-alice'), ('a', 'bob', 'a-bob');
                 ALTER TABLE shop.items ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY mine ON shop.items USING (
                   tenant = current_setting('quarry.tenant', true)
                   AND owner = current_setting('quarry.subject', true));
                 CREATE VIEW shop.names AS SELECT name FROM shop.items;
                 GRANT USAGE ON SCHEMA shop TO {reader};
                 GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {reader};"
            ))
            .await
            .unwrap();
        let role = RoleConfig {
            scopes: vec!["sql:query".into()],
            tables: vec!["shop.*".into()],
            db_role: Some(reader.clone()),
            ..RoleConfig::default()
        };
        let policy = Policy::new(&PolicyConfig {
            hash_salt: String::new(),
            roles: [("clerk".to_string(), role)].into_iter().collect(),
        })
        .unwrap();
        Self { db, reader, policy }
    }

    async fn tool(&self) -> (SqlTool, Arc<DataVersions>, tokio::task::JoinHandle<()>) {
        let config = CacheConfig {
            enabled: true,
            rescan_secs: 1,
            ..CacheConfig::default()
        };
        let versions = DataVersions::new(self.db.url(), &["shop".to_owned()], &config);
        let listener = tokio::spawn(versions.clone().run());
        assert!(
            versions.wait_until(WAIT, DataVersions::is_live).await,
            "the listener connects"
        );
        let store = ResultStore::new(config.max_bytes, Duration::from_secs(config.ttl_secs));
        let tool = SqlTool::new(
            self.db.pool().clone(),
            SqlToolConfig {
                schemas: vec!["shop".into()],
                ..SqlToolConfig::default()
            },
            SqlModels::default(),
            None,
        )
        .unwrap()
        .with_result_cache(SourceCache::new(store, versions.clone()));
        (tool, versions, listener)
    }

    async fn exec(&self, sql: &str) {
        self.db
            .pool()
            .get()
            .await
            .unwrap()
            .batch_execute(sql)
            .await
            .unwrap();
    }

    async fn remove(self) {
        self.db.drop_db().await;
        let admin = quarry_db::pool(&quarry_db::testing::server_url(), 1, WAIT).unwrap();
        let _ = admin
            .get()
            .await
            .unwrap()
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", self.reader))
            .await;
    }

    /// A governed caller of `tenant` named `subject` who reads through the
    /// role `reader`.
    fn caller(&self, tenant: &str, subject: &str) -> Caller {
        let policy = &self.policy;
        let principal = Principal {
            tenant: tenant.into(),
            subject: subject.into(),
            roles: vec!["clerk".into()],
            scopes: vec![],
        };
        let grant = policy.grant(&principal);
        Caller::new(principal).with_grant(Arc::new(grant))
    }
}

fn names(result: &QueryResult) -> Vec<String> {
    result
        .rows
        .iter()
        .map(|row| {
            if let Cell::Text(text) = &row[0] {
                text.clone()
            } else {
                panic!("not text: {:?}", row[0])
            }
        })
        .collect()
}

fn operator(tenant: &str) -> Caller {
    Caller::operator(Principal {
        tenant: tenant.into(),
        subject: "ops".into(),
        roles: vec![],
        scopes: vec![],
    })
}

#[tokio::test]
async fn a_repeated_query_is_served_until_a_table_it_reads_changes() {
    let shop = Shop::create().await;
    let (tool, versions, listener) = shop.tool().await;
    let alice = shop.caller("a", "alice");
    let sql = "SELECT name FROM shop.items ORDER BY name";

    let first = tool.execute(&alice, sql, 0).await.unwrap();
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(names(&first), ["a-alice"]);
    // other whitespace and keyword case: the same normalised statement
    let again = tool
        .execute(&alice, "select  name\n from shop.items order by name", 0)
        .await
        .unwrap();
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.rows, first.rows);

    let before = versions.version_of("shop", "items").expect("covered");
    shop.exec("INSERT INTO shop.items VALUES ('a', 'alice', 'a-alice-2')")
        .await;
    assert!(
        versions
            .wait_until(WAIT, |v| v.version_of("shop", "items") > Some(before))
            .await,
        "the committed insert is announced"
    );
    let after = tool.execute(&alice, sql, 0).await.unwrap();
    assert_eq!(after.cache, CacheStatus::Miss, "invalidated by the insert");
    assert_eq!(names(&after), ["a-alice", "a-alice-2"]);
    assert_eq!(
        tool.execute(&alice, sql, 0).await.unwrap().cache,
        CacheStatus::Hit
    );

    // a rolled-back write announces nothing; TRUNCATE does
    let current = versions.version_of("shop", "items");
    shop.exec("BEGIN; DELETE FROM shop.items; ROLLBACK").await;
    shop.exec("TRUNCATE shop.items").await;
    assert!(
        versions
            .wait_until(WAIT, |v| v.version_of("shop", "items") > current)
            .await
    );
    let emptied = tool.execute(&alice, sql, 0).await.unwrap();
    assert_eq!(emptied.cache, CacheStatus::Miss);
    assert!(emptied.rows.is_empty());
    listener.abort();
    shop.remove().await;
}

#[tokio::test]
async fn tenants_and_principals_never_share_a_cached_result() {
    let shop = Shop::create().await;
    let (tool, _versions, listener) = shop.tool().await;
    let sql = "SELECT name FROM shop.items ORDER BY name";
    let callers = [
        (shop.caller("a", "alice"), "a-alice"),
        (shop.caller("b", "alice"), "b-alice"),
        (shop.caller("a", "bob"), "a-bob"),
    ];
    for round in 0..2 {
        for (caller, expected) in &callers {
            let result = tool.execute(caller, sql, 0).await.unwrap();
            assert_eq!(
                names(&result),
                [*expected],
                "{}/{} in round {round}",
                caller.principal.tenant,
                caller.principal.subject
            );
            let status = if round == 0 {
                CacheStatus::Miss
            } else {
                CacheStatus::Hit
            };
            assert_eq!(result.cache, status);
        }
    }
    listener.abort();
    shop.remove().await;
}

#[test]
fn the_key_holds_the_tenant_the_principal_and_the_session() {
    let policy = ValidationPolicy::default();
    let query = validate("SELECT 1 AS one", &policy).unwrap();
    let key = |caller: &Caller| ResultKey::new("default", caller, &query, 10);
    let base = key(&operator("a"));
    assert_eq!(base, key(&operator("a")));
    assert_ne!(base, key(&operator("b")), "tenant");
    let mut other_subject = operator("a");
    other_subject.principal.subject = "someone".into();
    assert_ne!(base, key(&other_subject), "subject");
    let mut other_roles = operator("a");
    other_roles.principal.roles = vec!["admin".into()];
    assert_ne!(base, key(&other_roles), "roles");
    assert_ne!(
        base,
        ResultKey::new("other", &operator("a"), &query, 10),
        "source"
    );
    assert_ne!(
        base,
        ResultKey::new("default", &operator("a"), &query, 11),
        "row cap"
    );
}

#[test]
fn statements_that_read_the_clock_or_chance_are_refused() {
    let policy = ValidationPolicy::default();
    let reads = |sql: &str| Reads::of(validate(sql, &policy).unwrap().statement());
    let plain = reads("SELECT lower(name), count(*) FROM shop.items GROUP BY 1").unwrap();
    assert!(plain.functions.contains("lower") && plain.functions.contains("count"));
    assert_eq!(
        plain.relations,
        [(Some("shop".to_owned()), "items".to_owned())]
    );
    for sql in [
        "SELECT current_date",
        "SELECT CURRENT_TIMESTAMP",
        "SELECT 'now'::date",
        "SELECT DATE 'today'",
        "SELECT name FROM shop.items WHERE added > 'yesterday'",
    ] {
        assert!(reads(sql).is_none(), "{sql}");
    }
    // now() and random() are calls: refused later as not immutable
    let volatile = reads("SELECT now(), random()").unwrap();
    assert!(volatile.functions.contains("now") && volatile.functions.contains("random"));
}

#[tokio::test]
async fn views_and_volatile_functions_are_not_cached() {
    let shop = Shop::create().await;
    let (tool, _versions, listener) = shop.tool().await;
    let ops = operator("a");
    for sql in [
        "SELECT name FROM shop.names",
        "SELECT name, now() FROM shop.items",
        "SELECT name, random() FROM shop.items",
    ] {
        for _ in 0..2 {
            let result = tool.execute(&ops, sql, 0).await.unwrap();
            assert_eq!(result.cache, CacheStatus::Bypassed, "{sql}");
        }
    }
    // unqualified names resolve on the source's schemas
    let sql = "SELECT name FROM items ORDER BY name";
    assert_eq!(
        tool.execute(&ops, sql, 0).await.unwrap().cache,
        CacheStatus::Miss
    );
    assert_eq!(
        tool.execute(&ops, sql, 0).await.unwrap().cache,
        CacheStatus::Hit
    );
    listener.abort();
    shop.remove().await;
}

#[tokio::test]
async fn without_change_notices_the_cache_is_bypassed_until_they_resume() {
    let shop = Shop::create().await;
    let (tool, versions, listener) = shop.tool().await;
    // the listener reports to health and metrics as a background task
    let supervisor = quarry_db::supervisor::Supervisor::new();
    versions.report_to(supervisor.register("result-cache-listener", "cache"));
    let task = || supervisor.tasks()["result-cache-listener"].clone();
    assert_eq!(task().status, TaskStatus::Running);
    let ops = operator("a");
    let sql = "SELECT name FROM shop.items ORDER BY name";
    assert_eq!(
        tool.execute(&ops, sql, 0).await.unwrap().cache,
        CacheStatus::Miss
    );
    assert_eq!(
        tool.execute(&ops, sql, 0).await.unwrap().cache,
        CacheStatus::Hit
    );

    // the listener's connection is cut
    shop.exec(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = '{LISTENER_NAME}' AND datname = current_database()"
    ))
    .await;
    assert!(
        versions.wait_until(WAIT, |v| !v.is_live()).await,
        "the drop is noticed"
    );
    let down = task();
    assert_eq!(down.status, TaskStatus::Restarting, "{down:?}");
    assert!(down.last_error.is_some(), "{down:?}");
    // a change while nobody listens
    shop.exec("INSERT INTO shop.items VALUES ('a', 'ops', 'unseen')")
        .await;
    let dark = tool.execute(&ops, sql, 0).await.unwrap();
    assert_eq!(dark.cache, CacheStatus::Bypassed);

    assert!(
        versions.wait_until(WAIT, DataVersions::is_live).await,
        "it reconnects"
    );
    let up = task();
    assert_eq!(up.status, TaskStatus::Running, "{up:?}");
    assert!(up.restarts >= 1, "{up:?}");
    let back = tool.execute(&ops, sql, 0).await.unwrap();
    assert_eq!(
        back.cache,
        CacheStatus::Miss,
        "nothing from before the drop is served"
    );
    assert!(names(&back).contains(&"unseen".to_owned()));
    listener.abort();
    shop.remove().await;
}

#[tokio::test]
async fn a_table_recreated_under_its_name_is_noticed_by_the_rescan() {
    let shop = Shop::create().await;
    let (tool, versions, listener) = shop.tool().await;
    let ops = operator("a");
    let sql = "SELECT name FROM shop.items ORDER BY name";
    tool.execute(&ops, sql, 0).await.unwrap();
    let before = versions.version_of("shop", "items");
    shop.exec(
        "DROP TABLE shop.items CASCADE;
         CREATE TABLE shop.items (tenant text, owner text, name text);
         INSERT INTO shop.items VALUES ('a', 'ops', 'fresh')",
    )
    .await;
    assert!(
        versions
            .wait_until(WAIT, |v| v.version_of("shop", "items") > before)
            .await,
        "the rescan sees the new table and covers it"
    );
    let result = tool.execute(&ops, sql, 0).await.unwrap();
    assert_eq!(result.cache, CacheStatus::Miss);
    assert_eq!(names(&result), ["fresh"]);
    listener.abort();
    shop.remove().await;
}
