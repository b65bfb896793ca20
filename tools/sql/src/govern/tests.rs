use quarry_auth::{Policy, PolicyConfig, Principal, RoleConfig};

use super::*;
use crate::{ColumnInfo, TableKind, ValidationPolicy, validate};

fn table(schema: &str, name: &str, columns: &[&str]) -> TableInfo {
    TableInfo {
        schema: schema.into(),
        name: name.into(),
        kind: TableKind::Table,
        comment: None,
        estimated_rows: None,
        columns: columns
            .iter()
            .map(|c| ColumnInfo {
                name: (*c).into(),
                data_type: "text".into(),
                nullable: true,
                comment: None,
            })
            .collect(),
        primary_key: vec![],
        foreign_keys: vec![],
    }
}

fn catalog() -> Vec<TableInfo> {
    vec![
        table("tate", "artists", &["id", "name", "gender", "birth_place"]),
        table("tate", "artworks", &["id", "title", "acquisition_year"]),
        table("tate", "secrets", &["id", "code"]),
        table("tate", "state", &["id", "name"]),
        table("geo", "state", &["id", "name"]),
        table("geo", "lake", &["id", "state_id"]),
    ]
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn grant(roles: &[&str]) -> Grant {
    let analyst = RoleConfig {
        scopes: strings(&["sql:query"]),
        tables: strings(&[
            "tate.artists",
            "tate.artworks",
            "tate.state",
            "geo.state",
            "geo.lake",
        ]),
        deny_columns: strings(&["tate.artists.gender"]),
        masks: [(
            "tate.artists.birth_place".to_owned(),
            "keep_last:3".to_owned(),
        )]
        .into(),
        row_filters: [(
            "tate.artworks".to_owned(),
            "acquisition_year >= 1900".to_owned(),
        )]
        .into(),
        db_role: Some("quarry_reader".into()),
        pii: strings(&["tate.artists.name"]),
        ..RoleConfig::default()
    };
    let policy = Policy::new(&PolicyConfig {
        hash_salt: String::new(),
        roles: [("analyst".to_owned(), analyst)].into(),
    })
    .unwrap();
    policy.grant(&Principal {
        tenant: "acme".into(),
        subject: "ann".into(),
        roles: strings(roles),
        scopes: vec![],
    })
}

fn run(sql: &str, roles: &[&str]) -> Result<ValidatedQuery, Rejection> {
    let schemas = strings(&["tate", "geo"]);
    let policy = ValidationPolicy {
        allowed_schemas: Some(schemas.clone()),
        ..ValidationPolicy::default()
    };
    let query = validate(sql, &policy)?;
    govern(query, &catalog(), &schemas, &grant(roles))
}

fn refused(sql: &str) -> Rejection {
    run(sql, &["analyst"]).unwrap_err()
}

#[test]
fn tables_not_granted_are_forbidden_by_name() {
    let r = refused("SELECT code FROM tate.secrets");
    assert_eq!(r.kind, RejectionKind::Forbidden);
    assert_eq!(
        r.message,
        "table tate.secrets is not available to your roles"
    );
    let r = refused("SELECT 1 FROM secrets");
    assert_eq!(r.kind, RejectionKind::Forbidden);
    let r = refused("SELECT 1 FROM (SELECT * FROM tate.secrets) s");
    assert_eq!(r.kind, RejectionKind::Forbidden);
    // default deny: a grant with no known role sees no table at all
    let r = run("SELECT id FROM tate.artworks", &["root"]).unwrap_err();
    assert_eq!(r.kind, RejectionKind::Forbidden);
}

#[test]
fn hidden_columns_are_refused_by_name_and_absent_from_star() {
    for sql in [
        "SELECT gender FROM tate.artists",
        "SELECT a.gender FROM tate.artists a",
        "SELECT id FROM tate.artists WHERE gender = 'x'",
        "SELECT count(*) FROM tate.artists GROUP BY gender",
    ] {
        let r = refused(sql);
        assert_eq!(r.kind, RejectionKind::Forbidden, "{sql}");
        assert_eq!(
            r.message, "column tate.artists.gender is not available to your roles",
            "{sql}"
        );
    }
    let q = run("SELECT * FROM tate.artists", &["analyst"]).unwrap();
    let sql = q.sql();
    assert!(!sql.contains("gender"), "{sql}");
    assert!(sql.contains(r#""name""#), "{sql}");
    assert_eq!(q.shown_sql(), "SELECT * FROM tate.artists");
}

#[test]
fn masks_and_row_filters_are_applied_inside_a_derived_table() {
    let q = run(
        "SELECT a.birth_place FROM tate.artists AS a WHERE a.birth_place LIKE 'L%'",
        &["analyst"],
    )
    .unwrap();
    let sql = q.sql();
    assert!(
        sql.starts_with(
            r#"SELECT a.birth_place FROM (SELECT "id", "name", CASE WHEN "birth_place" IS NULL THEN NULL ELSE '****' || right("birth_place"::TEXT, 3) END AS "birth_place" FROM "tate"."artists") AS a"#
        ),
        "{sql}"
    );
    let q = run("SELECT count(*) FROM tate.artworks", &["analyst"]).unwrap();
    assert!(
        q.sql().contains("WHERE (acquisition_year >= 1900)"),
        "{}",
        q.sql()
    );
    let session = q.session().unwrap();
    assert_eq!(
        (session.tenant.as_str(), session.db_role.as_deref()),
        ("acme", Some("quarry_reader"))
    );
    // a table the policy leaves whole is not rewritten
    let q = run("SELECT l.id FROM geo.lake l", &["analyst"]).unwrap();
    assert_eq!(q.sql(), "SELECT l.id FROM geo.lake l");
}

#[test]
fn three_part_column_references_follow_the_rewrite() {
    let q = run(
        "SELECT tate.artworks.title FROM tate.artworks",
        &["analyst"],
    )
    .unwrap();
    assert!(
        q.sql().starts_with("SELECT artworks.title FROM (SELECT"),
        "{}",
        q.sql()
    );
}

#[test]
fn ambiguous_and_shadowed_names_are_refused() {
    let r = refused("SELECT s.name FROM state s JOIN lake l ON l.state_id = s.id");
    assert_eq!(r.kind, RejectionKind::Ambiguous);
    assert!(
        r.message.contains("tate.state and geo.state"),
        "{}",
        r.message
    );
    assert!(run("SELECT s.name FROM geo.state s", &["analyst"]).is_ok());
    let r = refused("WITH artists AS (SELECT 1 AS id) SELECT id FROM artists");
    assert_eq!(r.kind, RejectionKind::Ambiguous);
    // a CTE with its own name is fine
    assert!(
        run(
            "WITH a AS (SELECT id FROM tate.artworks) SELECT id FROM a",
            &["analyst"]
        )
        .is_ok()
    );
}

#[test]
fn attribute_notation_calls_are_refused() {
    for sql in [
        "SELECT a.pg_typeof FROM tate.artworks a",
        "SELECT (a).pg_typeof FROM tate.artworks a",
        "SELECT w.md5 FROM (SELECT * FROM tate.artworks) w",
    ] {
        let r = refused(sql);
        assert_eq!(
            r.kind,
            RejectionKind::DeniedFunction,
            "{sql}: {}",
            r.message
        );
    }
    // columns, aliases and default names are not calls
    for sql in [
        "SELECT w.title FROM (SELECT * FROM tate.artworks) w",
        "SELECT c.n FROM (SELECT count(*) AS n FROM tate.artworks) c",
        "SELECT c.count FROM (SELECT count(*) FROM tate.artworks) c",
    ] {
        assert!(run(sql, &["analyst"]).is_ok(), "{sql}");
    }
}

#[test]
fn an_unrestricted_grant_is_not_rewritten() {
    let schemas = strings(&["tate"]);
    let policy = ValidationPolicy::default();
    let query = validate("SELECT gender FROM tate.artists", &policy).unwrap();
    let q = govern(query, &catalog(), &schemas, &Grant::unrestricted()).unwrap();
    assert!(q.session().is_none());
    assert_eq!(q.sql(), "SELECT gender FROM tate.artists");
}

#[test]
fn pii_tagged_columns_and_their_aliases_are_marked() {
    let q = run(
        "SELECT a.name, upper(a.name) AS shout, a.id AS key FROM tate.artists a",
        &["analyst"],
    )
    .unwrap();
    assert_eq!(q.session().unwrap().pii_columns, ["name", "shout"]);
}
