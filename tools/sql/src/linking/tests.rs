use std::collections::HashSet;

use super::*;
use crate::schema::{ColumnInfo, ForeignKey, TableKind};

fn col(name: &str, data_type: &str, comment: &str) -> ColumnInfo {
    ColumnInfo {
        name: name.into(),
        data_type: data_type.into(),
        nullable: true,
        comment: (!comment.is_empty()).then(|| comment.to_string()),
    }
}

fn table(
    name: &str,
    columns: Vec<ColumnInfo>,
    pk: &[&str],
    fks: Vec<ForeignKey>,
    comment: &str,
) -> TableInfo {
    TableInfo {
        schema: "tate".into(),
        name: name.into(),
        kind: TableKind::Table,
        comment: Some(comment.into()),
        estimated_rows: Some(1000),
        columns,
        primary_key: pk.iter().map(|s| s.to_string()).collect(),
        foreign_keys: fks,
    }
}

fn fk(columns: &[&str], table: &str, referenced: &[&str]) -> ForeignKey {
    ForeignKey {
        name: format!("fk_{table}"),
        columns: columns.iter().map(|s| s.to_string()).collect(),
        referenced_schema: "tate".into(),
        referenced_table: table.into(),
        referenced_columns: referenced.iter().map(|s| s.to_string()).collect(),
    }
}

fn tate() -> (Vec<TableInfo>, ValueIndex) {
    let tables = vec![
        table(
            "artists",
            vec![
                col("id", "integer", "artist id"),
                col("name", "text", "full name of the artist"),
                col("gender", "text", "Male, Female or null"),
                col("birth_year", "integer", "year of birth"),
                col("death_year", "integer", "year of death"),
                col("birth_place", "text", "place of birth"),
            ],
            &["id"],
            vec![],
            "people who made works in the collection",
        ),
        table(
            "artworks",
            vec![
                col("id", "integer", "artwork id"),
                col("title", "text", "title of the work"),
                col("medium", "text", "materials, e.g. oil paint on canvas"),
                col(
                    "acquisition_year",
                    "integer",
                    "year the work was acquired by the gallery",
                ),
                col("year_made", "integer", "year the work was made"),
                col(
                    "credit_line",
                    "text",
                    "how the work was acquired: presented, bequeathed, purchased",
                ),
                col("height_mm", "numeric", "height in millimetres"),
            ],
            &["id"],
            vec![],
            "works of art in the collection",
        ),
        table(
            "artwork_contributors",
            vec![
                col("artwork_id", "integer", ""),
                col("artist_id", "integer", ""),
                col("role", "text", "artist, after, attributed to"),
            ],
            &["artwork_id", "artist_id", "role"],
            vec![
                fk(&["artwork_id"], "artworks", &["id"]),
                fk(&["artist_id"], "artists", &["id"]),
            ],
            "links works to the artists who made them",
        ),
        table(
            "movements",
            vec![
                col("id", "integer", ""),
                col("name", "text", "art movement name"),
            ],
            &["id"],
            vec![],
            "art movements",
        ),
    ];
    let mut values = ValueIndex::new();
    values.add(
        "tate.artists",
        "name",
        [
            "Joseph Mallord William Turner".to_string(),
            "John Constable".into(),
        ],
    );
    values.add(
        "tate.artworks",
        "medium",
        [
            "Watercolour on paper".to_string(),
            "Oil paint on canvas".into(),
        ],
    );
    values.add(
        "tate.movements",
        "name",
        ["Pre-Raphaelite".to_string(), "Cubism".into()],
    );
    (tables, values)
}

#[test]
fn words_split_identifiers_and_drop_plurals() {
    assert_eq!(words("acquisition_year"), ["acquisition", "year"]);
    assert_eq!(words("birthYear"), ["birth", "year"]);
    assert_eq!(words("How many Artworks?"), ["artwork"]);
    assert_eq!(words("countries"), ["country"]);
}

#[test]
fn a_value_links_its_column_and_join_paths_are_added() {
    let (tables, values) = tate();
    let index = SchemaIndex::new(
        tables,
        values,
        LinkingConfig {
            whole_schema_tokens: 0,
            ..Default::default()
        },
    );
    let linked = index.link(
        "Which watercolours by Turner were acquired before 1900?",
        None,
    );
    assert!(!linked.whole_schema);
    let tables: HashSet<&str> = linked.tables.iter().map(String::as_str).collect();
    assert!(tables.contains("tate.artists"), "{tables:?}");
    assert!(tables.contains("tate.artworks"), "{tables:?}");
    assert!(
        tables.contains("tate.artwork_contributors"),
        "join path missing: {tables:?}"
    );
    assert!(!tables.contains("tate.movements"), "{tables:?}");
    let columns: HashSet<(&str, &str)> = linked
        .columns
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .collect();
    for expected in [
        ("tate.artists", "name"),
        ("tate.artworks", "medium"),
        ("tate.artworks", "acquisition_year"),
        ("tate.artwork_contributors", "artist_id"),
        ("tate.artwork_contributors", "artwork_id"),
    ] {
        assert!(
            columns.contains(&expected),
            "{expected:?} missing from {columns:?}"
        );
    }
    assert!(
        linked.context.contains("'Joseph Mallord William Turner'"),
        "{}",
        linked.context
    );
    // only the sampled values holding a question word are shown
    assert!(
        linked.context.contains("'Watercolour on paper'")
            && !linked.context.contains("John Constable")
            && !linked.context.contains("Oil paint on canvas'"),
        "{}",
        linked.context
    );
    assert!(linked.context_tokens < linked.full_tokens);
}

#[test]
fn small_schemas_go_in_whole() {
    let (tables, values) = tate();
    let index = SchemaIndex::new(
        tables,
        values,
        LinkingConfig {
            whole_schema_tokens: 100_000,
            ..Default::default()
        },
    );
    let linked = index.link("anything", None);
    assert!(linked.whole_schema);
    assert_eq!(linked.context_tokens, linked.full_tokens);
    assert_eq!(linked.tables.len(), 4);
}

#[test]
fn nothing_matching_falls_back_to_the_whole_schema() {
    let (tables, values) = tate();
    let index = SchemaIndex::new(
        tables,
        values,
        LinkingConfig {
            whole_schema_tokens: 0,
            ..Default::default()
        },
    );
    assert!(index.link("zzz qqq", None).whole_schema);
}

#[test]
fn embeddings_can_link_what_words_miss() {
    let (tables, values) = tate();
    let mut index = SchemaIndex::new(
        tables,
        values,
        LinkingConfig {
            whole_schema_tokens: 0,
            ..Default::default()
        },
    );
    let (t, c) = index.element_texts();
    // a fake 2-d embedding: movements points one way, everything else another
    let unit = |hit: bool| {
        if hit {
            vec![1.0_f32, 0.0]
        } else {
            vec![0.0, 1.0]
        }
    };
    let tables_v: Vec<Vec<f32>> = t.iter().map(|s| unit(s.contains("movement"))).collect();
    let columns_v: Vec<Vec<Vec<f32>>> = c
        .iter()
        .map(|cs| cs.iter().map(|s| unit(s.contains("movement"))).collect())
        .collect();
    index.set_embeddings(tables_v, columns_v);
    let linked = index.link("which styles exist", Some(&[1.0, 0.0]));
    assert_eq!(
        linked.tables.first().map(String::as_str),
        Some("tate.movements"),
        "{linked:?}"
    );
}

// ---- Spider regression (schema only, lexical + embeddings off) -----------

fn spider_dir() -> std::path::PathBuf {
    std::env::var_os("QUARRY_SHARED_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data")
        })
        .join("spider")
}

/// Spider's `tables.json` as [`TableInfo`]s per database (schema = db_id).
fn spider_schemas() -> std::collections::HashMap<String, Vec<TableInfo>> {
    let text =
        std::fs::read_to_string(spider_dir().join("tables.json")).expect("spider tables.json");
    let dbs: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut out = std::collections::HashMap::new();
    for db in dbs {
        let db_id = db["db_id"].as_str().unwrap().to_string();
        let table_names: Vec<String> = db["table_names_original"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_lowercase())
            .collect();
        let mut tables: Vec<TableInfo> = table_names
            .iter()
            .map(|name| TableInfo {
                schema: db_id.clone(),
                name: name.clone(),
                kind: TableKind::Table,
                comment: None,
                estimated_rows: None,
                columns: vec![],
                primary_key: vec![],
                foreign_keys: vec![],
            })
            .collect();
        let originals = db["column_names_original"].as_array().unwrap();
        let natural = db["column_names"].as_array().unwrap();
        let types = db["column_types"].as_array().unwrap();
        let mut columns: Vec<(usize, String)> = Vec::new();
        for (i, c) in originals.iter().enumerate() {
            let t = c[0].as_i64().unwrap();
            let name = c[1].as_str().unwrap().to_lowercase();
            if t < 0 {
                columns.push((usize::MAX, name));
                continue;
            }
            let t = t as usize;
            columns.push((t, name.clone()));
            tables[t].columns.push(ColumnInfo {
                name,
                data_type: types[i].as_str().unwrap().to_string(),
                nullable: true,
                comment: Some(natural[i][1].as_str().unwrap().to_string()),
            });
        }
        for pk in db["primary_keys"].as_array().unwrap() {
            let (t, name) = &columns[pk.as_u64().unwrap() as usize];
            tables[*t].primary_key.push(name.clone());
        }
        for pair in db["foreign_keys"].as_array().unwrap() {
            let (from_t, from_c) = columns[pair[0].as_u64().unwrap() as usize].clone();
            let (to_t, to_c) = columns[pair[1].as_u64().unwrap() as usize].clone();
            let referenced_table = table_names[to_t].clone();
            tables[from_t].foreign_keys.push(ForeignKey {
                name: format!("fk_{from_c}"),
                columns: vec![from_c],
                referenced_schema: db_id.clone(),
                referenced_table,
                referenced_columns: vec![to_c],
            });
        }
        out.insert(db_id, tables);
    }
    out
}

/// Table recall of lexical linking over the 972 Spider dev questions, from the
/// schema alone (no values, no embeddings: the eval command adds both). A
/// floor, so that a change that breaks linking fails here.
#[test]
fn spider_table_recall_from_schema_alone() {
    let schemas = spider_schemas();
    let dev: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(spider_dir().join("dev.json")).unwrap())
            .unwrap();
    let indexes: std::collections::HashMap<&String, SchemaIndex> = schemas
        .iter()
        .map(|(db, tables)| {
            (
                db,
                SchemaIndex::new(
                    tables.clone(),
                    ValueIndex::new(),
                    LinkingConfig {
                        whole_schema_tokens: 0,
                        ..Default::default()
                    },
                ),
            )
        })
        .collect();
    let policy = crate::ValidationPolicy::default();
    let (mut recall_sum, mut share_sum, mut n) = (0.0, 0.0, 0usize);
    for q in &dev {
        let db = q["db_id"].as_str().unwrap().to_string();
        let Ok(validated) = crate::validate(q["query"].as_str().unwrap(), &policy) else {
            continue;
        };
        let gold: HashSet<String> = validated
            .tables()
            .iter()
            .map(|t| format!("{db}.{}", t.name.to_lowercase()))
            .collect();
        if gold.is_empty() {
            continue;
        }
        let linked = indexes[&db].link(q["question"].as_str().unwrap(), None);
        let got: HashSet<&String> = linked.tables.iter().collect();
        let hit = gold.iter().filter(|t| got.contains(t)).count();
        if hit < gold.len() && std::env::var_os("QUARRY_DEBUG_LINKING").is_some() {
            eprintln!(
                "MISS {:?}\n  gold {gold:?}\n  got  {:?}",
                q["question"], linked.tables
            );
        }
        recall_sum += hit as f64 / gold.len() as f64;
        share_sum += linked.context_tokens as f64 / linked.full_tokens as f64;
        n += 1;
    }
    let recall = recall_sum / n as f64;
    let share = share_sum / n as f64;
    eprintln!(
        "spider lexical linking: questions {n}, table recall {recall:.3}, context share {share:.3}"
    );
    assert!(n >= 950, "only {n} questions evaluated");
    assert!(recall >= 0.93, "table recall {recall:.3}");
    assert!(share <= 0.40, "context share {share:.3}");
}

/// Spider's `pets_1`/`concert_singer` shapes: link tables named after the
/// tables they join, columns named after their table.
fn singers_and_pets() -> SchemaIndex {
    let tables = vec![
        table(
            "singer",
            vec![
                col("singer_id", "integer", ""),
                col("name", "text", ""),
                col("song_name", "text", ""),
                col("age", "integer", ""),
            ],
            &["singer_id"],
            vec![],
            "",
        ),
        table(
            "concert",
            vec![
                col("concert_id", "integer", ""),
                col("concert_name", "text", ""),
                col("theme", "text", ""),
            ],
            &["concert_id"],
            vec![],
            "",
        ),
        table(
            "singer_in_concert",
            vec![
                col("concert_id", "integer", ""),
                col("singer_id", "integer", ""),
            ],
            &["concert_id", "singer_id"],
            vec![
                fk(&["concert_id"], "concert", &["concert_id"]),
                fk(&["singer_id"], "singer", &["singer_id"]),
            ],
            "",
        ),
        table(
            "pets",
            vec![
                col("pet_id", "integer", ""),
                col("pet_type", "text", "pet type"),
                col("pet_age", "integer", "pet age"),
                col("weight", "numeric", ""),
            ],
            &["pet_id"],
            vec![],
            "",
        ),
        table(
            "stadium",
            vec![
                col("id", "integer", ""),
                col("location", "text", ""),
                col("capacity", "integer", ""),
                col("opened", "integer", ""),
            ],
            &["id"],
            vec![],
            "",
        ),
    ];
    SchemaIndex::new(tables, ValueIndex::new(), LinkingConfig::default())
}

fn linked_columns(linked: &LinkedSchema) -> HashSet<(&str, &str)> {
    linked
        .columns
        .iter()
        .map(|(t, c)| (t.as_str(), c.as_str()))
        .collect()
}

#[test]
fn a_tables_own_name_words_do_not_link_its_columns() {
    let index = singers_and_pets();
    // "pets" names the table; it says nothing about pet_age or pet_type
    // (by name or by comment)
    let linked = index.link("How many pets have a weight above 10?", None);
    let columns = linked_columns(&linked);
    assert!(columns.contains(&("tate.pets", "weight")), "{columns:?}");
    assert!(!columns.contains(&("tate.pets", "pet_age")), "{columns:?}");
    assert!(!columns.contains(&("tate.pets", "pet_type")), "{columns:?}");
    // the column's own word still links it
    let linked = index.link("What is the average age of the pets?", None);
    assert!(linked_columns(&linked).contains(&("tate.pets", "pet_age")));
}

#[test]
fn a_table_named_in_full_explains_its_words_in_other_tables_names() {
    let index = singers_and_pets();
    let linked = index.link("How many singers are there?", None);
    assert_eq!(linked.tables, ["tate.singer"]);
    // both named: the link table comes in as the join path
    let linked = index.link("Show the names of singers and their concerts", None);
    let tables: HashSet<&str> = linked.tables.iter().map(String::as_str).collect();
    assert_eq!(
        tables,
        HashSet::from(["tate.singer", "tate.concert", "tate.singer_in_concert"])
    );
}

#[test]
fn a_generic_word_alone_links_a_column_only_with_others() {
    let index = singers_and_pets();
    // "names" asks for the label column, not every `<x>_name`
    let linked = index.link("What are the names of the singers older than 30?", None);
    let columns = linked_columns(&linked);
    assert!(columns.contains(&("tate.singer", "name")), "{columns:?}");
    assert!(
        !columns.contains(&("tate.singer", "song_name")),
        "{columns:?}"
    );
    let linked = index.link("List the song names of singers older than 30", None);
    assert!(linked_columns(&linked).contains(&("tate.singer", "song_name")));
}

#[test]
fn a_lone_tables_primary_key_comes_only_when_ids_are_asked_for() {
    let index = singers_and_pets();
    let linked = index.link("How many stadiums hold more than 5000?", None);
    assert_eq!(linked.tables, ["tate.stadium"]);
    assert!(!linked_columns(&linked).contains(&("tate.stadium", "id")));
    let linked = index.link("List the ids of stadiums by capacity", None);
    assert!(linked_columns(&linked).contains(&("tate.stadium", "id")));
    // joined tables keep their keys
    let linked = index.link("Show the names of singers and their concerts", None);
    let columns = linked_columns(&linked);
    assert!(
        columns.contains(&("tate.singer", "singer_id")),
        "{columns:?}"
    );
    assert!(
        columns.contains(&("tate.concert", "concert_id")),
        "{columns:?}"
    );
}
