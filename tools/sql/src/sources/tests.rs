use std::time::Duration;

use quarry_auth::{Caller, Principal};

use super::*;
use crate::service::SqlModels;

fn source(tenants: &[&str], schemas: &[&str]) -> SourceConfig {
    SourceConfig {
        tenants: tenants.iter().map(|t| (*t).to_owned()).collect(),
        schemas: schemas.iter().map(|s| (*s).to_owned()).collect(),
        database_url: None,
        pool_size: 2,
        golden_path: None,
        semantic_path: None,
    }
}

fn config(sources: &[(&str, SourceConfig)]) -> SqlToolConfig {
    SqlToolConfig {
        schemas: vec!["shared".to_owned()],
        sources: sources
            .iter()
            .map(|(n, s)| ((*n).to_owned(), s.clone()))
            .collect(),
        ..SqlToolConfig::default()
    }
}

fn invalid(sources: &[(&str, SourceConfig)]) -> String {
    match validate_sources(&config(sources)) {
        Err(StartError::Config(message)) => message,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn a_tenant_in_two_sources_is_refused_naming_both() {
    let message = invalid(&[
        ("a", source(&["acme"], &["a"])),
        ("b", source(&["globex", "acme"], &["b"])),
    ]);
    assert_eq!(
        message,
        "sql.sources.b.tenants: \"acme\" is already served by sql.sources.a"
    );
}

#[test]
fn each_field_is_checked_by_name() {
    assert!(invalid(&[("a", source(&[], &["a"]))]).starts_with("sql.sources.a.tenants"));
    assert!(invalid(&[("a", source(&["t"], &[]))]).starts_with("sql.sources.a.schemas"));
    let mut zero = source(&["t"], &["a"]);
    zero.pool_size = 0;
    assert!(invalid(&[("a", zero)]).starts_with("sql.sources.a.pool_size"));
    let mut url = source(&["t"], &["a"]);
    url.database_url = Some("postgres://u@h:notaport/x".to_owned());
    assert!(invalid(&[("a", url)]).starts_with("sql.sources.a.database_url"));
    assert!(invalid(&[("Bad Name", source(&["t"], &["a"]))]).contains("[a-z0-9_-]+"));
    assert!(invalid(&[("default", source(&["t"], &["a"]))]).contains("sql.source"));
    validate_sources(&config(&[
        ("a", source(&["acme"], &["a"])),
        ("b", source(&["globex"], &["b"])),
    ]))
    .unwrap();
}

fn tool(config: SqlToolConfig) -> Arc<SqlTool> {
    // Pools connect lazily; routing never opens a connection.
    let pool = quarry_db::pool("postgres://u@127.0.0.1:1/x", 1, Duration::from_millis(10)).unwrap();
    Arc::new(SqlTool::new(pool, config, SqlModels::default(), None).unwrap())
}

fn caller(tenant: &str) -> Caller {
    Caller::new(Principal {
        tenant: tenant.to_owned(),
        subject: "s".to_owned(),
        roles: Vec::new(),
        scopes: Vec::new(),
    })
}

fn sources(serve_shared: bool) -> Sources {
    let shared_config = config(&[("a", source(&["acme", "acme-eu"], &["a"]))]);
    let a = &shared_config.sources["a"];
    let own = BTreeMap::from([(
        "a".to_owned(),
        (tool(a.tool_config("a", &shared_config)), a.tenants.clone()),
    )]);
    Sources::new(tool(shared_config.clone()), serve_shared, own)
}

#[test]
fn a_tenant_with_a_source_reaches_only_that_source() {
    let sources = sources(true);
    for tenant in ["acme", "acme-eu"] {
        let tool = sources.for_caller(&caller(tenant)).unwrap();
        assert_eq!(tool.config().source, "a");
        assert_eq!(tool.config().schemas, ["a"]);
    }
    let other = sources.for_caller(&caller("globex")).unwrap();
    assert_eq!(other.config().source, "default");
    assert_eq!(other.config().schemas, ["shared"]);
    // Tenant names are compared exactly: no prefix or case folding.
    for near in ["ACME", "acme ", "acm"] {
        assert_eq!(
            sources.for_caller(&caller(near)).unwrap().config().source,
            "default"
        );
    }
    assert_eq!(sources.all().len(), 2);
}

#[test]
fn without_the_shared_source_a_tenant_without_one_is_refused() {
    let sources = sources(false);
    assert_eq!(
        sources.for_caller(&caller("acme")).unwrap().config().source,
        "a"
    );
    let refused = sources.for_caller(&caller("globex")).unwrap_err();
    assert!(matches!(&refused, SqlError::NoSource(t) if t == "globex"));
    assert_eq!(
        quarry_proto::ServiceError::error_code(&refused),
        quarry_proto::ServiceErrorCode::PermissionDenied
    );
}
