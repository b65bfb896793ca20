use super::*;
use crate::execute::{Cell, ExecConfig, Executor};
use crate::validate::{ValidationPolicy, validate};
use quarry_db::testing::TestDb;

#[test]
fn quotes_names() {
    let sql = read_only_role_sql("ro\"le'x", &["Tate".into()]);
    assert!(sql.contains("CREATE ROLE \"ro\"\"le'x\" NOLOGIN"), "{sql}");
    assert!(sql.contains("rolname = 'ro\"le''x'"), "{sql}");
    assert!(sql.contains("GRANT USAGE ON SCHEMA \"Tate\" TO"), "{sql}");
}

async fn drop_role(db: &TestDb, role: &str) {
    let client = db.pool().get().await.unwrap();
    let role = quote_ident(role);
    client
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_role_reads_but_cannot_write() {
    let db = TestDb::create().await;
    let role = format!("quarry_ro_{}", uuid::Uuid::new_v4().simple());
    let client = db.pool().get().await.unwrap();
    client
        .batch_execute(
            "CREATE SCHEMA tate; CREATE TABLE tate.artworks (id int);
             INSERT INTO tate.artworks VALUES (1);
             CREATE SCHEMA secret; CREATE TABLE secret.keys (k text)",
        )
        .await
        .unwrap();
    let schemas = vec!["tate".to_owned()];
    // idempotent
    ensure_read_only_role(&client, &role, &schemas)
        .await
        .unwrap();
    ensure_read_only_role(&client, &role, &schemas)
        .await
        .unwrap();
    // a table created later is readable through the default privileges
    client
        .batch_execute("CREATE TABLE tate.later (id int); INSERT INTO tate.later VALUES (2)")
        .await
        .unwrap();

    // with the role in force, a write fails on privileges even in a
    // read-write transaction
    let error = client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE {}; INSERT INTO tate.artworks VALUES (3)",
            quote_ident(&role)
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("42501"), "{error}");
    client.batch_execute("ROLLBACK").await.unwrap();
    let error = client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL ROLE {}; CREATE TABLE tate.x (id int)",
            quote_ident(&role)
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code().map(|c| c.code()), Some("42501"), "{error}");
    client.batch_execute("ROLLBACK").await.unwrap();
    drop(client);

    let exec = Executor::new(
        db.pool().clone(),
        ExecConfig {
            role: Some(role.clone()),
            ..ExecConfig::default()
        },
    );
    let policy = ValidationPolicy::default();
    let q = validate(
        "SELECT a.id, l.id FROM tate.artworks a, tate.later l",
        &policy,
    )
    .unwrap();
    let result = exec.execute(&q).await.unwrap();
    assert_eq!(result.rows, vec![vec![Cell::Int(1), Cell::Int(2)]]);
    // the executor really runs as the role
    let q = validate("SELECT * FROM secret.keys", &policy).unwrap();
    let error = exec.execute(&q).await.unwrap_err();
    assert_eq!(error.sqlstate(), Some("42501"), "{error:?}");
    drop_role(&db, &role).await;
    db.drop_db().await;
}
