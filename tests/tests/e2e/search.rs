//! `SearchService` end to end: a real server with the `artworks` collection
//! over the Tate slice, its index kept current by the sync (trigger outbox,
//! backfill, incremental changes) without any manual step; filters checked
//! against the source rows with SQL; the scripted embedder for vector and
//! hybrid modes; and the Assistant's `search_documents` tool with a scripted
//! model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use quarry_llm::testing::{SCRIPTED_EMBEDDING_DIMENSION, ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    CitationKind, CollectionInfo, FieldRange, FieldValue, Filter, FilterList,
    ListCollectionsRequest, SearchMode, SearchRequest, SearchResponse, Value, filter,
    tool_result::Outcome, value::Kind,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, ask, ask_all, authed, final_answer, first_tool_result, token,
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// How long the sync and the index follower may take to reflect a change.
/// Generous: the machine is shared; nothing here asserts on speed.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The classification every filtered search in this file asks for.
const UNIQUE: &str = "on paper, unique";

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::TextValue(s.to_string())),
    }
}

fn int(i: i64) -> Value {
    Value {
        kind: Some(Kind::Int64Value(i)),
    }
}

fn eq(field: &str, value: Value) -> Filter {
    Filter {
        kind: Some(filter::Kind::Eq(FieldValue {
            field: field.to_string(),
            value: Some(value),
        })),
    }
}

fn and(filters: Vec<Filter>) -> Filter {
    Filter {
        kind: Some(filter::Kind::And(FilterList { filters })),
    }
}

/// `lower <= field < upper`.
fn half_open(field: &str, lower: i64, upper: i64) -> Filter {
    Filter {
        kind: Some(filter::Kind::Range(FieldRange {
            field: field.to_string(),
            lower: Some(int(lower)),
            upper: Some(int(upper)),
            lower_exclusive: false,
            upper_exclusive: true,
        })),
    }
}

fn bm25(query: &str) -> SearchRequest {
    SearchRequest {
        collection: "artworks".into(),
        query: query.into(),
        mode: SearchMode::Bm25 as i32,
        ..Default::default()
    }
}

async fn search(server: &TestServer, request: SearchRequest) -> Result<SearchResponse, Status> {
    server
        .search()
        .search(authed(request, &token("t1")))
        .await
        .map(tonic::Response::into_inner)
}

async fn artworks_info(server: &TestServer) -> CollectionInfo {
    let mut collections = server
        .search()
        .list_collections(authed(ListCollectionsRequest {}, &token("t1")))
        .await
        .unwrap()
        .into_inner()
        .collections;
    assert_eq!(collections.len(), 1, "{collections:?}");
    collections.pop().unwrap()
}

/// Polls `check` every 100 ms until it returns `Some`, failing after
/// [`READY_TIMEOUT`] with `what` and the last value seen.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {READY_TIMEOUT:?} waiting for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn source_count(server: &TestServer) -> u64 {
    let client = server.db.pool().get().await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM tate.artworks", &[])
        .await
        .unwrap()
        .get(0);
    u64::try_from(n).unwrap()
}

/// Waits until the collection lists as many documents as the source has
/// rows (and, with `embedded`, as many embedded documents).
async fn wait_until_indexed(server: &TestServer, embedded: bool) -> CollectionInfo {
    let rows = source_count(server).await;
    assert_eq!(rows, SLICE_LINES as u64);
    eventually("the index to hold every source row", async || {
        let info = artworks_info(server).await;
        if info.documents == rows && (!embedded || info.embedded_documents == rows) {
            Ok(info)
        } else {
            Err(format!(
                "documents {} embedded {} of {rows}",
                info.documents, info.embedded_documents
            ))
        }
    })
    .await
}

fn keys(response: &SearchResponse) -> Vec<String> {
    response.hits.iter().map(|h| h.key.clone()).collect()
}

/// `(acquisition_year, classification, title)` of the source rows `keys`.
async fn source_rows(
    server: &TestServer,
    keys: &[String],
) -> BTreeMap<String, (Option<i32>, Option<String>, String)> {
    let ids: Vec<i32> = keys.iter().map(|k| k.parse().unwrap()).collect();
    let client = server.db.pool().get().await.unwrap();
    client
        .query(
            "SELECT id, acquisition_year, classification, title FROM tate.artworks WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get::<_, i32>(0).to_string(), (r.get(1), r.get(2), r.get(3))))
        .collect()
}

fn satisfies(row: &(Option<i32>, Option<String>, String)) -> bool {
    matches!(row.0, Some(y) if (1920..1930).contains(&y)) && row.1.as_deref() == Some(UNIQUE)
}

fn filter_1920s_unique() -> Filter {
    and(vec![
        half_open("acquisition_year", 1920, 1930),
        eq("classification", text(UNIQUE)),
    ])
}

async fn exec(server: &TestServer, sql: &str) {
    let client = server.db.pool().get().await.unwrap();
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test]
async fn bm25_search_returns_fields_and_filters_hold_on_the_source_rows() {
    let server = TestServer::start(Options {
        search: true,
        ..Default::default()
    })
    .await;
    let info = wait_until_indexed(&server, false).await;
    assert_eq!(info.name, "artworks");
    assert_eq!(info.source, "tate.artworks");
    assert_eq!(info.text_fields, ["title", "medium", "credit_line"]);
    let filters: Vec<(&str, &str)> = info
        .filter_fields
        .iter()
        .map(|f| (f.name.as_str(), f.r#type.as_str()))
        .collect();
    assert_eq!(
        filters,
        [
            ("acquisition_year", "integer"),
            ("classification", "keyword"),
            ("artist", "keywords")
        ]
    );
    assert_eq!(info.stored_fields, ["url"]);
    assert_eq!(info.embedding_model, "", "no embedder is configured");

    // every hit of an unfiltered search, with the fields asked for
    let all = search(
        &server,
        SearchRequest {
            k: 1000,
            fields: vec![
                "title".into(),
                "acquisition_year".into(),
                "artist".into(),
                "url".into(),
            ],
            ..bm25("landscape")
        },
    )
    .await
    .unwrap();
    assert_eq!(all.mode, SearchMode::Bm25 as i32);
    assert_eq!(all.documents, SLICE_LINES as u64);
    assert!(all.hits.len() >= 5, "{:?}", keys(&all));
    let rows = source_rows(&server, &keys(&all)).await;
    assert_eq!(rows.len(), all.hits.len(), "every hit is a source row");
    let mut previous = f64::INFINITY;
    for hit in &all.hits {
        let bm25 = hit.bm25.expect("bm25 mode sets the bm25 score");
        assert!(hit.vector.is_none());
        assert!(hit.score <= previous, "hits are ordered by score");
        previous = hit.score;
        assert_eq!(hit.score, bm25.score);
        let names: BTreeSet<&str> = hit.fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            BTreeSet::from(["title", "acquisition_year", "artist", "url"])
        );
        let (year, _, title) = &rows[&hit.key];
        assert_eq!(
            hit.fields["title"].kind,
            Some(Kind::TextValue(title.clone()))
        );
        assert_eq!(
            hit.fields["acquisition_year"].kind,
            Some(Kind::Int64Value(i64::from(year.unwrap())))
        );
        let Some(Kind::TextValue(url)) = &hit.fields["url"].kind else {
            panic!("{:?}", hit.fields["url"])
        };
        assert!(url.starts_with("http://www.tate.org.uk/"), "{url}");
        let Some(Kind::JsonValue(artists)) = &hit.fields["artist"].kind else {
            panic!("{:?}", hit.fields["artist"])
        };
        let artists: Vec<String> = serde_json::from_str(artists).unwrap();
        assert!(!artists.is_empty(), "{}", hit.key);
    }
    // the word is in the title of most hits (the rest match on medium or credit line)
    assert!(
        rows.values()
            .any(|(_, _, title)| title.to_lowercase().contains("landscape"))
    );
    // the slice has landscape hits the filter below must exclude
    assert!(
        rows.values().any(|row| !satisfies(row)),
        "the test needs a hit outside the filter"
    );

    // with a range on acquisition_year and eq on classification
    let filtered = search(
        &server,
        SearchRequest {
            k: 1000,
            filter: Some(filter_1920s_unique()),
            fields: vec!["title".into()],
            ..bm25("landscape")
        },
    )
    .await
    .unwrap();
    assert!(!filtered.hits.is_empty());
    let filtered_rows = source_rows(&server, &keys(&filtered)).await;
    for hit in &filtered.hits {
        let row = &filtered_rows[&hit.key];
        assert!(
            satisfies(row),
            "hit {} violates the filter: {row:?}",
            hit.key
        );
        assert_eq!(hit.fields.keys().collect::<Vec<_>>(), ["title"]);
    }
    // and it is exactly the unfiltered hits that satisfy it
    let expected: BTreeSet<String> = all
        .hits
        .iter()
        .filter(|h| satisfies(&rows[&h.key]))
        .map(|h| h.key.clone())
        .collect();
    let got: BTreeSet<String> = keys(&filtered).into_iter().collect();
    assert_eq!(got, expected);

    // k caps the hits; default fields are the stored ones
    let two = search(
        &server,
        SearchRequest {
            k: 2,
            ..bm25("landscape")
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&two), keys(&all)[..2]);
    assert_eq!(two.hits[0].fields.keys().collect::<Vec<_>>(), ["url"]);

    // a keywords filter: the contributors' names, read through the join
    let client = server.db.pool().get().await.unwrap();
    let (artist, works): (String, Vec<i32>) = {
        let row = client
            .query_one(
                "SELECT a.name, array_agg(c.artwork_id ORDER BY c.artwork_id) FROM tate.artwork_contributors c \
                 JOIN tate.artists a ON a.id = c.artist_id JOIN tate.artworks w ON w.id = c.artwork_id \
                 WHERE w.title ILIKE '%landscape%' GROUP BY a.name ORDER BY count(*) DESC, a.name LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let by_artist = search(
        &server,
        SearchRequest {
            k: 1000,
            filter: Some(eq("artist", text(&artist))),
            ..bm25("landscape")
        },
    )
    .await
    .unwrap();
    let got: BTreeSet<String> = keys(&by_artist).into_iter().collect();
    for work in &works {
        assert!(got.contains(&work.to_string()), "{artist}: {work} missing");
    }
    let ids: Vec<i32> = got.iter().map(|k| k.parse().unwrap()).collect();
    let theirs: i64 = client
        .query_one(
            "SELECT count(DISTINCT c.artwork_id) FROM tate.artwork_contributors c JOIN tate.artists a \
             ON a.id = c.artist_id WHERE a.name = $1 AND c.artwork_id = ANY($2)",
            &[&artist, &ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(theirs as usize, got.len(), "every hit is by {artist}");
    drop(client);
    server.stop().await;
}

fn violation(status: &Status) -> (String, String) {
    let details = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest detail in {status:?}"));
    assert_eq!(details.field_violations.len(), 1, "{details:?}");
    let v = &details.field_violations[0];
    (v.field.clone(), v.description.clone())
}

#[tokio::test]
async fn bad_requests_name_the_field_and_unauthenticated_calls_are_refused() {
    let server = TestServer::start(Options {
        search: true,
        ..Default::default()
    })
    .await;
    wait_until_indexed(&server, false).await;
    let good = || SearchRequest {
        filter: Some(filter_1920s_unique()),
        ..bm25("landscape")
    };
    assert!(!search(&server, good()).await.unwrap().hits.is_empty());

    let cases: Vec<(&str, SearchRequest, &str, &str)> = vec![
        (
            "unknown collection",
            SearchRequest {
                collection: "paintings".into(),
                ..good()
            },
            "collection",
            "paintings",
        ),
        (
            "unknown filter field",
            SearchRequest {
                filter: Some(and(vec![
                    eq("classification", text(UNIQUE)),
                    eq("colour", text("blue")),
                ])),
                ..good()
            },
            "filter.and[1].eq.field",
            "colour",
        ),
        (
            "text value for an integer field",
            SearchRequest {
                filter: Some(eq("acquisition_year", text("1922"))),
                ..good()
            },
            "filter.eq.value",
            "integer",
        ),
        (
            "integer bound for a keyword field",
            SearchRequest {
                filter: Some(half_open("classification", 1, 2)),
                ..good()
            },
            "filter.range.lower",
            "keyword",
        ),
        (
            "boolean value",
            SearchRequest {
                filter: Some(eq(
                    "classification",
                    Value {
                        kind: Some(Kind::BoolValue(true)),
                    },
                )),
                ..good()
            },
            "filter.eq.value",
            "",
        ),
        (
            "empty query in bm25 mode",
            SearchRequest {
                query: "  ".into(),
                ..good()
            },
            "query",
            "",
        ),
        (
            "only stop words in bm25 mode",
            SearchRequest {
                query: "the of and".into(),
                ..good()
            },
            "query",
            "",
        ),
        (
            "k above the limit",
            SearchRequest { k: 5000, ..good() },
            "k",
            "5000",
        ),
        (
            "unknown returned field",
            SearchRequest {
                fields: vec!["title".into(), "secret".into()],
                ..good()
            },
            "fields[1]",
            "secret",
        ),
    ];
    for (what, request, field, mentions) in cases {
        let status = search(&server, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        let (got_field, description) = violation(&status);
        assert_eq!(got_field, field, "{what}: {description}");
        assert!(
            description.contains(mentions),
            "{what}: {description:?} should mention {mentions:?}"
        );
    }

    // vector mode needs an embedder, and none is configured
    let status = search(
        &server,
        SearchRequest {
            mode: SearchMode::Vector as i32,
            ..good()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    // hybrid degrades to bm25 and says so
    let hybrid = search(
        &server,
        SearchRequest {
            mode: SearchMode::Hybrid as i32,
            ..good()
        },
    )
    .await
    .unwrap();
    assert_eq!(hybrid.mode, SearchMode::Bm25 as i32);

    // no token, or a bad one
    let mut client = server.search();
    let status = client.search(good()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .list_collections(ListCollectionsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = client
        .search(authed(good(), "not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

/// Keys of a bm25 search for `word` (all hits).
async fn found(server: &TestServer, word: &str, filter: Option<Filter>) -> Vec<String> {
    keys(
        &search(
            server,
            SearchRequest {
                k: 1000,
                filter,
                ..bm25(word)
            },
        )
        .await
        .unwrap(),
    )
}

/// Waits until a bm25 search for `word` (under `filter`) returns exactly `want`.
async fn wait_for_hits(server: &TestServer, word: &str, filter: Option<Filter>, want: &[&str]) {
    let what = match &filter {
        None => format!("{word:?} to find {want:?}"),
        Some(f) => format!("{word:?} under {f:?} to find {want:?}"),
    };
    eventually(&what, async || {
        let got = found(server, word, filter.clone()).await;
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn inserts_updates_and_deletes_reach_the_index_by_themselves() {
    let server = TestServer::start(Options {
        search: true,
        ..Default::default()
    })
    .await;
    wait_until_indexed(&server, false).await;
    assert!(found(&server, "zanzibarquux", None).await.is_empty());
    let client = server.db.pool().get().await.unwrap();
    let (artist_id, artist): (i32, String) = {
        let row = client
            .query_one("SELECT id, name FROM tate.artists ORDER BY id LIMIT 1", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    drop(client);
    let by_artist = || Some(eq("artist", text(&artist)));
    assert!(
        !found(&server, "zanzibarquux", by_artist())
            .await
            .contains(&"990001".to_string())
    );

    // a new row becomes searchable
    exec(
        &server,
        "INSERT INTO tate.artworks (id, accession_number, title, medium, acquisition_year, classification, url) \
         VALUES (990001, 'Z99001', 'Zanzibarquux Harbour at Dusk', 'Oil paint on canvas', 1925, 'on paper, unique', \
         'https://example.org/990001')",
    )
    .await;
    wait_for_hits(&server, "zanzibarquux", None, &["990001"]).await;
    let response = search(
        &server,
        SearchRequest {
            fields: vec!["title".into(), "url".into(), "artist".into()],
            ..bm25("zanzibarquux")
        },
    )
    .await
    .unwrap();
    let hit = &response.hits[0];
    assert_eq!(
        hit.fields["title"].kind,
        Some(Kind::TextValue("Zanzibarquux Harbour at Dusk".into()))
    );
    assert_eq!(
        hit.fields["url"].kind,
        Some(Kind::TextValue("https://example.org/990001".into()))
    );
    assert_eq!(
        hit.fields["artist"].kind,
        Some(Kind::JsonValue("[]".into()))
    );
    assert_eq!(response.documents, SLICE_LINES as u64 + 1);
    // its filter fields are indexed too
    assert_eq!(
        found(&server, "zanzibarquux", Some(filter_1920s_unique())).await,
        ["990001"]
    );
    assert!(
        found(
            &server,
            "zanzibarquux",
            Some(half_open("acquisition_year", 1926, 2000))
        )
        .await
        .is_empty()
    );
    // not by the artist yet: a change to a dependent table re-syncs the work
    assert!(found(&server, "zanzibarquux", by_artist()).await.is_empty());
    exec(
        &server,
        &format!(
            "INSERT INTO tate.artwork_contributors (artwork_id, artist_id, role, position) \
             VALUES (990001, {artist_id}, 'artist', 1)"
        ),
    )
    .await;
    wait_for_hits(&server, "zanzibarquux", by_artist(), &["990001"]).await;

    // an updated title: the old word no longer finds it, the new one does
    exec(
        &server,
        "UPDATE tate.artworks SET title = 'Quixotrelle Harbour at Dawn' WHERE id = 990001",
    )
    .await;
    wait_for_hits(&server, "quixotrelle", None, &["990001"]).await;
    wait_for_hits(&server, "zanzibarquux", None, &[]).await;
    // words it kept still find it (among others)
    assert!(
        found(&server, "harbour", None)
            .await
            .contains(&"990001".to_string())
    );

    // deleted: gone, and the count is back
    exec(
        &server,
        "BEGIN; DELETE FROM tate.artwork_contributors WHERE artwork_id = 990001; \
         DELETE FROM tate.artworks WHERE id = 990001; COMMIT",
    )
    .await;
    wait_for_hits(&server, "quixotrelle", None, &[]).await;
    assert!(
        !found(&server, "harbour", None)
            .await
            .contains(&"990001".to_string())
    );
    eventually("the document count to drop back", async || {
        let info = artworks_info(&server).await;
        if info.documents == SLICE_LINES as u64 {
            Ok(())
        } else {
            Err(info.documents.to_string())
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn hybrid_and_vector_modes_with_the_scripted_embedder() {
    let embedder = ScriptedServer::start(vec![]).await;
    let server = TestServer::start(Options {
        search: true,
        extra_toml: format!(
            "[embedding]\nkind = \"openai\"\nbase_url = \"{}\"\nmodel = \"scripted-embedding\"\n\
             dimension = {SCRIPTED_EMBEDDING_DIMENSION}\nmax_retries = 0\n",
            embedder.base_url()
        ),
        ..Default::default()
    })
    .await;
    let info = wait_until_indexed(&server, true).await;
    assert_eq!(info.embedding_model, "scripted-embedding");
    assert_eq!(info.embedded_documents, SLICE_LINES as u64);

    // the exact title of one work: BM25 matches its words, and its title's
    // embedding is the query's (the scripted vectors hash the text)
    let client = server.db.pool().get().await.unwrap();
    let (key, title): (String, String) = {
        let row = client
            .query_one(
                "SELECT id::text, title FROM tate.artworks WHERE title = 'Landscape with Windmill'",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    drop(client);

    let hybrid = search(
        &server,
        SearchRequest {
            collection: "artworks".into(),
            query: title.clone(),
            mode: SearchMode::Hybrid as i32,
            k: 20,
            fields: vec!["title".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(hybrid.mode, SearchMode::Hybrid as i32);
    assert_eq!(hybrid.documents, SLICE_LINES as u64);
    assert_eq!(hybrid.embedded_documents, hybrid.documents);
    let hit = hybrid
        .hits
        .iter()
        .find(|h| h.key == key)
        .unwrap_or_else(|| panic!("{key} not in {:?}", keys(&hybrid)));
    let lexical = hit.bm25.expect("a bm25 score for a lexical match");
    let semantic = hit
        .vector
        .unwrap_or_else(|| panic!("a vector score: {:#?}", hybrid));
    assert!(lexical.rank >= 1 && lexical.score > 0.0, "{lexical:?}");
    assert!(
        (semantic.score - 1.0).abs() < 1e-4,
        "identical text, cosine similarity 1: {semantic:?}"
    );
    assert_eq!(
        hit.fields["title"].kind,
        Some(Kind::TextValue(title.clone()))
    );
    // the fused score is reciprocal rank fusion (k = 60, weights 1)
    let rrf = 1.0 / (60.0 + f64::from(lexical.rank)) + 1.0 / (60.0 + f64::from(semantic.rank));
    assert!((hit.score - rrf).abs() < 1e-9, "{} vs {rrf}", hit.score);
    assert_eq!(hybrid.hits[0].key, key, "best in both lists, so first");

    // vector mode alone: only vector scores, best first
    let vector = search(
        &server,
        SearchRequest {
            collection: "artworks".into(),
            query: title.clone(),
            mode: SearchMode::Vector as i32,
            k: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(vector.mode, SearchMode::Vector as i32);
    assert_eq!(vector.hits.len(), 5);
    assert_eq!(vector.hits[0].key, key);
    for hit in &vector.hits {
        assert!(hit.bm25.is_none());
        assert_eq!(hit.score, hit.vector.unwrap().score);
    }
    // a query of stop words only runs the vector retriever in hybrid mode
    let stop_words = search(
        &server,
        SearchRequest {
            collection: "artworks".into(),
            query: "the of and".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(stop_words.mode, SearchMode::Vector as i32);
    assert_eq!(stop_words.hits.len(), 10);

    // the embedder was called for the documents and for the queries
    let inputs: Vec<String> = embedder
        .requests()
        .iter()
        .flat_map(|r| match &r["input"] {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect(),
            serde_json::Value::Null
            | serde_json::Value::Bool(_)
            | serde_json::Value::Number(_)
            | serde_json::Value::Object(_) => vec![],
        })
        .collect();
    assert!(inputs.contains(&title), "{} inputs", inputs.len());
    server.stop().await;
}

#[tokio::test]
async fn agentic_search_documents_cites_the_hits_and_the_model_sees_them() {
    let arguments = serde_json::json!({
        "collection": "artworks",
        "query": "landscape",
        "filter": {"and": [
            {"eq": {"field": "classification", "value": UNIQUE}},
            {"range": {"field": "acquisition_year", "gte": 1920, "lt": 1930}}
        ]},
        "k": 5
    })
    .to_string();
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("search_documents", arguments),
        ScriptedTurn::text("Tate holds several landscapes on paper acquired in the 1920s."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        search: true,
        ..Default::default()
    })
    .await;
    wait_until_indexed(&server, false).await;

    let events = ask_all(
        &server,
        ask("Which landscapes on paper came to Tate in the 1920s?"),
    )
    .await
    .unwrap();
    let result = first_tool_result(&events);
    assert_eq!(result.tool_name, "search_documents");
    let Some(Outcome::Search(found)) = &result.outcome else {
        panic!("{result:?}")
    };
    assert_eq!(found.collection, "artworks");
    assert_eq!(found.query, "landscape");
    assert_eq!(found.mode, SearchMode::Bm25 as i32, "no embedder: bm25");
    assert_eq!(found.documents, SLICE_LINES as u64);
    assert_eq!(found.hits.len(), 5, "{:?}", found.hits);
    let hit_keys: Vec<String> = found.hits.iter().map(|h| h.key.clone()).collect();
    let rows = source_rows(&server, &hit_keys).await;
    for key in &hit_keys {
        assert!(satisfies(&rows[key]), "{key}: {:?}", rows[key]);
    }
    // the same hits a direct search finds
    let direct = search(
        &server,
        SearchRequest {
            k: 5,
            filter: Some(filter_1920s_unique()),
            ..bm25("landscape")
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&direct), hit_keys);

    let answer = final_answer(&events);
    assert_eq!(
        answer.text,
        "Tate holds several landscapes on paper acquired in the 1920s."
    );
    let cited: Vec<String> = answer
        .citations
        .iter()
        .filter(|c| c.kind == CitationKind::Document as i32)
        .map(|c| {
            assert_eq!(c.call_id, result.call_id);
            c.source_id.clone()
        })
        .collect();
    let want: Vec<String> = hit_keys.iter().map(|k| format!("artworks/{k}")).collect();
    assert_eq!(cited, want);

    // the model was offered the tool, then saw the hits
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let tools: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert!(tools.contains(&"search_documents"), "{tools:?}");
    let tool_message = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result sent back to the model");
    let content = tool_message["content"].as_str().unwrap();
    assert!(content.contains("<tool_result"), "{content}");
    assert!(content.contains("hits: 5"), "{content}");
    for hit in &found.hits {
        assert!(content.contains(&format!("key={}", hit.key)), "{content}");
        let Some(Kind::TextValue(url)) = &hit.fields["url"].kind else {
            panic!("{:?}", hit.fields)
        };
        assert!(content.contains(url.as_str()), "{url} not in {content}");
    }
    server.stop().await;
}
