use super::*;

fn principal(roles: &[&str], scopes: &[&str]) -> Principal {
    Principal {
        tenant: "acme".to_owned(),
        subject: "alice".to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn config(toml_roles: Vec<(&str, RoleConfig)>) -> PolicyConfig {
    PolicyConfig {
        hash_salt: String::new(),
        roles: toml_roles
            .into_iter()
            .map(|(n, r)| (n.to_owned(), r))
            .collect(),
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn analyst() -> RoleConfig {
    RoleConfig {
        scopes: strings(&["ask", "sql:query"]),
        tables: strings(&["tate.*"]),
        deny_columns: strings(&["tate.artists.gender"]),
        masks: [(
            "tate.artists.place_of_birth".to_owned(),
            "redact".to_owned(),
        )]
        .into(),
        row_filters: [(
            "tate.artworks".to_owned(),
            "acquisition_year >= 1900".to_owned(),
        )]
        .into(),
        db_role: Some("quarry_reader".to_owned()),
        collections: strings(&["artworks"]),
        ..RoleConfig::default()
    }
}

fn viewer() -> RoleConfig {
    RoleConfig {
        scopes: strings(&["ask"]),
        tables: strings(&["tate.artists"]),
        columns: [("tate.artists".to_owned(), strings(&["id", "name"]))].into(),
        ..RoleConfig::default()
    }
}

fn policy() -> Policy {
    Policy::new(&config(vec![("analyst", analyst()), ("viewer", viewer())])).unwrap()
}

#[test]
fn unknown_roles_get_nothing() {
    let grant = policy().grant(&principal(&["root", "admin"], &[]));
    assert!(grant.roles().is_empty());
    for scope in scopes::ALL {
        assert!(!grant.has_scope(scope), "{scope}");
    }
    assert!(grant.table("tate", "artists").is_none());
    assert!(!grant.allows_collection("artworks"));
    assert!(!grant.allows_summary_kind("artist"));
    assert_eq!(
        tonic::Status::from(grant.require("ask").unwrap_err()).code(),
        tonic::Code::PermissionDenied
    );
}

#[test]
fn token_scopes_narrow_but_never_widen() {
    let p = policy();
    let grant = p.grant(&principal(
        &["viewer"],
        &["ask", "sql:query", "golden:write"],
    ));
    assert!(grant.has_scope("ask"));
    assert!(!grant.has_scope("sql:query"), "the viewer role lacks it");
    assert!(!grant.has_scope("golden:write"));
    let grant = p.grant(&principal(&["analyst"], &["ask"]));
    assert!(grant.has_scope("ask"));
    assert!(!grant.has_scope("sql:query"), "the token narrowed it away");
    assert!(!grant.has_scope("schema:read"));
}

#[test]
fn querying_implies_describing_but_not_the_reverse() {
    let p = policy();
    // analyst grants sql:query, not schema:read
    let grant = p.grant(&principal(&["analyst"], &[]));
    assert!(grant.has_scope("schema:read"));
    let grant = p.grant(&principal(&["analyst"], &["sql:query"]));
    assert!(
        grant.has_scope("schema:read"),
        "implied after narrowing too"
    );
    let grant = p.grant(&principal(&["viewer"], &[]));
    assert!(!grant.has_scope("schema:read"), "viewer cannot query");
}

#[test]
fn tables_columns_masks_and_filters() {
    let p = policy();
    let grant = p.grant(&principal(&["analyst"], &[]));
    let artists = grant.table("tate", "artists").unwrap();
    assert!(artists.shows("name"));
    assert!(!artists.shows("gender"));
    assert_eq!(artists.mask("place_of_birth"), Some(&Mask::Redact));
    assert_eq!(artists.mask("name"), None);
    assert!(artists.row_filter().is_none());
    let artworks = grant.table("tate", "artworks").unwrap();
    assert_eq!(
        artworks.row_filter().as_deref(),
        Some("(acquisition_year >= 1900)")
    );
    assert!(grant.table("public", "artists").is_none());
    assert_eq!(grant.db_role(), Some("quarry_reader"));

    let viewer = p.grant(&principal(&["viewer"], &[]));
    let artists = viewer.table("tate", "artists").unwrap();
    assert!(artists.shows("id") && artists.shows("name"));
    assert!(!artists.shows("place_of_birth"), "not on the allow-list");
    assert!(viewer.table("tate", "artworks").is_none());
}

#[test]
fn roles_combine_as_a_union() {
    let p = policy();
    let both = p.grant(&principal(&["viewer", "analyst"], &[]));
    let artists = both.table("tate", "artists").unwrap();
    // viewer does not show gender, analyst denies it: still hidden
    assert!(!artists.shows("gender"));
    // analyst masks place_of_birth, viewer does not show it: masked
    assert_eq!(artists.mask("place_of_birth"), Some(&Mask::Redact));
    // a role that shows a column unmasked lifts another role's mask
    let mut unmasked = viewer();
    unmasked.columns = [("tate.artists".to_owned(), strings(&["place_of_birth"]))].into();
    let p = Policy::new(&config(vec![("analyst", analyst()), ("v", unmasked)])).unwrap();
    let grant = p.grant(&principal(&["analyst", "v"], &[]));
    assert_eq!(
        grant
            .table("tate", "artists")
            .unwrap()
            .mask("place_of_birth"),
        None
    );
    // row filters: one role without a filter lifts it; two filters are ORed
    let mut other = analyst();
    other.row_filters = [("tate.artworks".to_owned(), "year_made < 1800".to_owned())].into();
    let p = Policy::new(&config(vec![("a", analyst()), ("b", other)])).unwrap();
    let grant = p.grant(&principal(&["a", "b"], &[]));
    assert_eq!(
        grant
            .table("tate", "artworks")
            .unwrap()
            .row_filter()
            .as_deref(),
        Some("(acquisition_year >= 1900) OR (year_made < 1800)")
    );
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(RoleConfig, &str)> = vec![
        (
            RoleConfig {
                scopes: strings(&["sql:write"]),
                ..RoleConfig::default()
            },
            "policy.roles.r.scopes: unknown scope \"sql:write\"",
        ),
        (
            RoleConfig {
                tables: strings(&["artists"]),
                ..RoleConfig::default()
            },
            "policy.roles.r.tables: \"artists\" is not schema.table",
        ),
        (
            RoleConfig {
                tables: strings(&["tate.*"]),
                masks: [("tate.artists.name".to_owned(), "scramble".to_owned())].into(),
                ..RoleConfig::default()
            },
            "policy.roles.r.masks.\"tate.artists.name\": unknown mask",
        ),
        (
            RoleConfig {
                masks: [("tate.artists.name".to_owned(), "redact".to_owned())].into(),
                ..RoleConfig::default()
            },
            "does not grant this table",
        ),
        (
            RoleConfig {
                tables: strings(&["tate.artworks"]),
                row_filters: [(
                    "tate.artworks".to_owned(),
                    "true); DROP TABLE x; --".to_owned(),
                )]
                .into(),
                ..RoleConfig::default()
            },
            "policy.roles.r.row_filters.\"tate.artworks\"",
        ),
        (
            RoleConfig {
                db_role: Some("Reader\"; x".to_owned()),
                ..RoleConfig::default()
            },
            "policy.roles.r.db_role",
        ),
    ];
    for (role, expected) in cases {
        let err = Policy::new(&config(vec![("r", role)])).unwrap_err();
        assert!(err.to_string().contains(expected), "{err} lacks {expected}");
    }
}

#[test]
fn masks_parse() {
    assert_eq!(Mask::parse("keep_last:4"), Ok(Mask::KeepLast(4)));
    assert_eq!(Mask::parse("bucket:10"), Ok(Mask::Bucket(10.0)));
    assert!(Mask::parse("keep_last:0").is_err());
    assert!(Mask::parse("bucket:-1").is_err());
    assert!(Mask::parse("bucket:NaN").is_err());
    assert!(Mask::parse("redact:1").is_err());
}

#[test]
fn reload_swaps_only_a_valid_policy() {
    let store = PolicyStore::new(policy());
    let before = store.current().version();
    let bad = config(vec![(
        "r",
        RoleConfig {
            scopes: strings(&["nope"]),
            ..RoleConfig::default()
        },
    )]);
    assert!(store.reload(&bad).is_err());
    assert_eq!(store.current().version(), before);
    let after = store.reload(&config(vec![("viewer", viewer())])).unwrap();
    assert_ne!(after, before);
    assert!(
        store
            .current()
            .grant(&principal(&["analyst"], &[]))
            .roles()
            .is_empty()
    );
}
