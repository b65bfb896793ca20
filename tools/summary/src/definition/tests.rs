#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const CONFIG: &str = r#"
refresh_interval_secs = 600

[[kinds]]
name = "artist"
entity = "artist"
description = "One artist's works"
entities = "SELECT a.id AS key, a.name, count(*) AS weight FROM artists a GROUP BY 1, 2"
template = "{{ entity.name }}: {{ acquisitions.total | count }} works {% if acquisitions.range %}acquired {{ acquisitions.range | decades }}{% endif %}; media: {{ media.top.items | listing }}."

[[kinds.figures]]
name = "acquisitions"
shape = "series"
step = 10
compute = ["total", "range", "peak", "slope", "changes"]
sql = "SELECT w.acquisition_year / 10 * 10 AS period, count(*) AS value FROM works w WHERE w.artist_id = $1 GROUP BY 1;"

[[kinds.figures]]
name = "media"
shape = "breakdown"
top = 3
sql = "SELECT medium AS label, count(*) AS value FROM works WHERE artist_id = $1 GROUP BY 1"
"#;

fn config() -> SummaryConfig {
    toml::from_str(CONFIG).unwrap()
}

fn error_of(config: &SummaryConfig) -> DefinitionError {
    config.validate_static().unwrap_err()
}

#[test]
fn the_documented_shape_validates() {
    let c = config();
    assert_eq!(c.refresh_interval_secs, 600);
    assert_eq!(c.batch_size, 64);
    assert_eq!(c.kinds[0].figures[0].step, Some(10));
    c.validate_static().unwrap();
}

#[test]
fn unknown_fields_are_refused() {
    let text = CONFIG.replace("top = 3", "top = 3\ncolour = \"red\"");
    assert!(toml::from_str::<SummaryConfig>(&text).is_err());
}

#[test]
fn names_must_be_lowercase_unique_and_not_reserved() {
    let mut c = config();
    c.kinds[0].name = "Artist".into();
    let e = error_of(&c);
    assert_eq!(e.kind, "kinds[0]");
    assert!(e.message.contains("[a-z][a-z0-9_]*"), "{e}");

    let mut c = config();
    c.kinds.push(c.kinds[0].clone());
    let e = error_of(&c);
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("artist", "duplicate kind name")
    );

    let mut c = config();
    c.kinds[0].figures[1].name = "acquisitions".into();
    let e = error_of(&c);
    assert_eq!(e.figure.as_deref(), Some("acquisitions"));
    assert!(e.message.contains("duplicate"), "{e}");

    for reserved in ["entity", "none", "loop"] {
        let mut c = config();
        c.kinds[0].figures[1].name = reserved.into();
        let e = error_of(&c);
        assert_eq!(e.figure.as_deref(), Some(reserved));
        assert!(e.message.contains("reserved"), "{e}");
    }
    let mut c = config();
    c.kinds[0].figures[1].name = "2media".into();
    assert!(error_of(&c).message.contains("must match"));
}

#[test]
fn settings_must_be_positive() {
    let mut c = config();
    c.batch_size = 0;
    let e = error_of(&c);
    assert_eq!(
        e.to_string(),
        "summary definition summary: batch_size must be at least 1"
    );
    let mut c = config();
    c.concurrency = 0;
    assert!(error_of(&c).message.contains("concurrency"));
}

#[test]
fn computations_must_fit_the_shape() {
    let mut c = config();
    c.kinds[0].figures[1].compute = vec![Computation::Slope];
    let e = error_of(&c);
    assert_eq!(
        e.to_string(),
        "summary definition artist.media: computation slope does not apply to a breakdown figure"
    );
    let mut c = config();
    c.kinds[0].figures[1].compute = vec![Computation::Total];
    c.validate_static().unwrap();

    let mut c = config();
    c.kinds[0].figures[0].shape = Shape::Values;
    c.kinds[0].figures[0].step = None;
    assert!(
        error_of(&c)
            .message
            .contains("does not apply to a values figure")
    );

    let mut c = config();
    c.kinds[0].figures[0].compute.push(Computation::Shares);
    assert!(error_of(&c).message.contains("`shares` needs `focus`"));
    c.kinds[0].figures[0].focus = Some("Female".into());
    c.validate_static().unwrap();

    let mut c = config();
    c.kinds[0].figures[0].focus = Some("Female".into());
    assert!(error_of(&c).message.contains("only used by the `shares`"));

    let mut c = config();
    c.kinds[0].figures[0].step = Some(0);
    assert!(error_of(&c).message.contains("`step` must be > 0"));
    let mut c = config();
    c.kinds[0].figures[1].step = Some(1);
    assert!(error_of(&c).message.contains("series figures only"));
    let mut c = config();
    c.kinds[0].figures[1].top = Some(0);
    assert!(error_of(&c).message.contains("`top` must be at least 1"));
    let mut c = config();
    c.kinds[0].figures[0].top = Some(2);
    assert!(error_of(&c).message.contains("breakdown figures only"));
}

#[test]
fn sql_must_be_one_read_only_query() {
    for (sql, expected) in [
        ("UPDATE works SET title = 'x' WHERE id = $1", "only a query"),
        (
            "SELECT 1 AS label, 2 AS value; SELECT 2",
            "exactly one statement",
        ),
        (
            "WITH gone AS (DELETE FROM works WHERE id = $1 RETURNING *) SELECT 'x' AS label, 1 AS value FROM gone",
            "data-modifying",
        ),
        ("SELECT * INTO copy FROM works", "select into"),
        (
            "SELECT medium AS label, 1 AS value FROM works WHERE artist_id = $1 FOR UPDATE",
            "locking clause",
        ),
        ("SELEC medium FROM works", "does not parse"),
        ("", "no sql statement"),
    ] {
        let mut c = config();
        c.kinds[0].figures[1].sql = sql.into();
        let e = error_of(&c);
        assert_eq!(e.kind, "artist", "{sql}");
        assert_eq!(e.figure.as_deref(), Some("media"), "{sql}");
        assert!(e.message.contains(expected), "{sql}: {e}");
    }
    check_query("VALUES (1, 2)").unwrap();
    check_query("WITH x AS (SELECT 1 AS a) SELECT a FROM x UNION SELECT 2").unwrap();

    let mut c = config();
    c.kinds[0].entities = "DELETE FROM artists".into();
    let e = error_of(&c);
    assert_eq!(e.figure, None);
    assert!(e.message.starts_with("entities query: only a query"), "{e}");
}

#[test]
fn templates_must_compile_and_use_known_names() {
    let mut c = config();
    c.kinds[0].template = "{{ entity.name }} {{ acquisitons.total }}".into();
    let e = error_of(&c);
    assert_eq!(e.kind, "artist");
    assert!(e.message.contains("unknown variable acquisitons"), "{e}");

    let mut c = config();
    c.kinds[0].template = "{% if %}".into();
    assert!(error_of(&c).message.starts_with("template:"));

    let mut c = config();
    c.kinds[0].template = "{{ media.total | thousands }}".into();
    assert!(
        error_of(&c).message.contains("unknown filter thousands"),
        "{}",
        error_of(&c)
    );

    let mut c = config();
    c.kinds[0].template = "{% if media.total is bigger %}x{% endif %}".into();
    assert!(error_of(&c).message.contains("unknown test bigger"));

    // built-in filters, tests, globals and loop variables are fine; a `|`
    // inside a string is not a filter
    let mut c = config();
    c.kinds[0].template =
        "{% for i in media.top.items %}{{ i.label | upper }}{{ ' | nope' }}{% endfor %}\
                           {{ range(3) | length }}{% if media.top.other is none %}.{% endif %}"
            .into();
    c.validate_static().unwrap();
}

#[test]
fn definitions_files_are_appended_and_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("quarry-summary-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut more = config();
    more.kinds[0].name = "maker".into();
    let file = DefinitionsFile { kinds: more.kinds };
    std::fs::write(dir.join("more.toml"), toml::to_string(&file).unwrap()).unwrap();
    std::fs::write(dir.join("bad.toml"), "[[kinds]]\nname = 1\n").unwrap();

    let mut c = config();
    c.definitions = vec!["more.toml".into()];
    c.load_definitions(&dir).unwrap();
    assert_eq!(c.kinds.len(), 2);
    assert_eq!(c.kinds[1].name, "maker");
    c.validate_static().unwrap();

    let mut c = config();
    c.definitions = vec!["bad.toml".into()];
    let e = c.load_definitions(&dir).unwrap_err();
    assert!(e.kind.ends_with("bad.toml"), "{e}");
    assert!(e.message.starts_with("invalid definitions file"), "{e}");

    let mut c = config();
    c.definitions = vec!["missing.toml".into()];
    let e = c.load_definitions(&dir).unwrap_err();
    assert!(e.kind.ends_with("missing.toml"), "{e}");
    assert!(e.message.starts_with("cannot read file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
