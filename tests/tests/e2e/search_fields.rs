//! Search fields per role (`policy.roles.<r>.collection_fields`): a role
//! limited to some fields of the `artworks` collection gets hits without the
//! others, is refused when it filters on or asks for one, is not matched
//! against their text (BM25 or vectors), and the Assistant's
//! `search_documents` tool shows the model only what it may see.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::time::{Duration, Instant};

use quarry_llm::testing::{SCRIPTED_EMBEDDING_DIMENSION, ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    CollectionInfo, FieldValue, Filter, FilterList, ListCollectionsRequest, SearchMode,
    SearchRequest, SearchResponse, Value, filter, tool_result::Outcome, value::Kind,
};
use quarry_tests::{
    Options, SLICE_LINES, TestServer, ask, ask_all_as, authed, first_tool_result, token,
    token_with_roles,
};
use tonic::{Code, Status};

/// The test collection's text fields are `title`, `medium`, `credit_line`;
/// filters `acquisition_year`, `classification`, `artist`; stored `url`.
/// `narrow` sees two text fields and one filter field of them.
const NARROW_ROLE: &str = r#"
[policy.roles.narrow]
scopes = ["ask", "search"]
collections = ["artworks"]
collection_fields = { artworks = ["title", "medium", "acquisition_year"] }
"#;

/// How long the sync and the index follower may take to reflect a change
/// (a bound on a wait on a shared machine, not a speed assertion).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

fn narrow() -> String {
    token_with_roles("t1", "nel", &["narrow"], &[])
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::TextValue(s.to_string())),
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

fn request(query: &str, mode: SearchMode) -> SearchRequest {
    SearchRequest {
        collection: "artworks".into(),
        query: query.into(),
        mode: mode as i32,
        k: 50,
        ..Default::default()
    }
}

async fn search_as(
    server: &TestServer,
    token: &str,
    request: SearchRequest,
) -> Result<SearchResponse, Status> {
    server
        .search()
        .search(authed(request, token))
        .await
        .map(tonic::Response::into_inner)
}

async fn info_as(server: &TestServer, token: &str) -> CollectionInfo {
    let mut collections = server
        .search()
        .list_collections(authed(ListCollectionsRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .collections;
    assert_eq!(collections.len(), 1, "{collections:?}");
    collections.pop().unwrap()
}

/// Polls `check` every 100 ms until it returns `Ok`, failing after
/// [`READY_TIMEOUT`] with `what` and the last error.
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

/// Waits until the tester sees every source row indexed (and embedded).
async fn wait_until_indexed(server: &TestServer, embedded: bool) {
    let rows = SLICE_LINES as u64;
    eventually("the index to hold every source row", async || {
        let info = info_as(server, &token("t1")).await;
        if info.documents == rows && (!embedded || info.embedded_documents == rows) {
            Ok(())
        } else {
            Err(format!(
                "documents {} embedded {}",
                info.documents, info.embedded_documents
            ))
        }
    })
    .await;
}

fn assert_denied(status: &Status, naming: &[&str]) {
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "{}",
        status.message()
    );
    for part in naming {
        assert!(status.message().contains(part), "{}", status.message());
    }
}

#[tokio::test]
async fn a_role_limited_to_some_fields_gets_hits_without_the_others_and_cannot_filter_on_them() {
    let server = TestServer::start(Options {
        search: true,
        extra_toml: NARROW_ROLE.into(),
        ..Options::default()
    })
    .await;
    wait_until_indexed(&server, false).await;
    let narrow = narrow();

    // ListCollections shows the role only its fields
    let info = info_as(&server, &narrow).await;
    assert_eq!(info.text_fields, ["title", "medium"]);
    let filters: Vec<&str> = info.filter_fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, ["acquisition_year"]);
    assert!(info.stored_fields.is_empty(), "{info:?}");

    // the same search: the tester's hits carry `url`, the role's do not
    let everything = search_as(&server, &token("t1"), request("paper", SearchMode::Bm25))
        .await
        .unwrap();
    assert!(!everything.hits.is_empty());
    assert!(everything.hits.iter().all(|h| h.fields.contains_key("url")));
    let limited = search_as(&server, &narrow, request("paper", SearchMode::Bm25))
        .await
        .unwrap();
    assert!(!limited.hits.is_empty());
    assert!(
        limited.hits.iter().all(|h| h.fields.is_empty()),
        "{:?}",
        limited.hits[0].fields
    );
    // visible fields can be asked for; a hidden one is refused by name
    let shown = search_as(
        &server,
        &narrow,
        SearchRequest {
            fields: vec!["title".into(), "medium".into(), "acquisition_year".into()],
            ..request("paper", SearchMode::Bm25)
        },
    )
    .await
    .unwrap();
    assert!(
        shown.hits.iter().all(|h| h.fields.len() == 3),
        "{:?}",
        shown.hits[0].fields
    );
    for hidden in ["url", "credit_line", "classification"] {
        let status = search_as(
            &server,
            &narrow,
            SearchRequest {
                fields: vec!["title".into(), hidden.into()],
                ..request("paper", SearchMode::Bm25)
            },
        )
        .await
        .unwrap_err();
        assert_denied(&status, &["fields[1]", hidden]);
    }

    // filtering on a hidden field, at the top or nested, is refused by name
    let status = search_as(
        &server,
        &narrow,
        SearchRequest {
            filter: Some(eq("classification", text("on paper, unique"))),
            ..request("paper", SearchMode::Bm25)
        },
    )
    .await
    .unwrap_err();
    assert_denied(&status, &["filter.eq.field", "classification"]);
    let nested = Filter {
        kind: Some(filter::Kind::And(FilterList {
            filters: vec![
                eq(
                    "acquisition_year",
                    Value {
                        kind: Some(Kind::Int64Value(1922)),
                    },
                ),
                Filter {
                    kind: Some(filter::Kind::Not(Box::new(eq(
                        "artist",
                        text("Turner, Joseph Mallord William"),
                    )))),
                },
            ],
        })),
    };
    let status = search_as(
        &server,
        &narrow,
        SearchRequest {
            filter: Some(nested.clone()),
            ..request("paper", SearchMode::Bm25)
        },
    )
    .await
    .unwrap_err();
    assert_denied(&status, &["filter.and[1].not.eq.field", "artist"]);
    // the same filter is fine for the tester, and a visible field for the role
    search_as(
        &server,
        &token("t1"),
        SearchRequest {
            filter: Some(nested),
            ..request("paper", SearchMode::Bm25)
        },
    )
    .await
    .unwrap();
    search_as(
        &server,
        &narrow,
        SearchRequest {
            filter: Some(eq(
                "acquisition_year",
                Value {
                    kind: Some(Kind::Int64Value(1922)),
                },
            )),
            ..request("paper", SearchMode::Bm25)
        },
    )
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_term_only_in_a_hidden_field_finds_nothing_for_the_role_by_words_or_by_vectors() {
    let embedder = ScriptedServer::start(vec![]).await;
    let server = TestServer::start(Options {
        search: true,
        extra_toml: format!(
            "{NARROW_ROLE}\n[embedding]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             model = \"scripted-embedding\"\ndimension = {SCRIPTED_EMBEDDING_DIMENSION}\n\
             max_retries = 0\n",
            embedder.base_url()
        ),
        ..Options::default()
    })
    .await;
    wait_until_indexed(&server, true).await;
    // one work's credit line (hidden from `narrow`) gets a word no title or
    // medium holds
    const WORD: &str = "zyzzogetonic";
    let (key, credit_line): (String, String) = {
        let client = server.db.pool().get().await.unwrap();
        let row = client
            .query_one(
                &format!(
                    "UPDATE tate.artworks SET credit_line = coalesce(credit_line, '') || ' {WORD}' \
                     WHERE id = (SELECT min(id) FROM tate.artworks) RETURNING id::text, credit_line"
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let tester = token("t1");
    eventually("the tester to find the word", async || {
        let hits = search_as(&server, &tester, request(WORD, SearchMode::Bm25))
            .await
            .map_err(|s| s.to_string())?
            .hits;
        let keys: Vec<String> = hits.iter().map(|h| h.key.clone()).collect();
        if keys == [key.clone()] {
            Ok(())
        } else {
            Err(format!("{keys:?}"))
        }
    })
    .await;
    // the role's query is not matched against the hidden text
    let narrow = narrow();
    let words = search_as(&server, &narrow, request(WORD, SearchMode::Bm25))
        .await
        .unwrap();
    assert!(words.hits.is_empty(), "{:?}", words.hits);
    let hybrid = search_as(&server, &narrow, request(WORD, SearchMode::Hybrid))
        .await
        .unwrap();
    assert!(
        hybrid
            .hits
            .iter()
            .all(|h| h.bm25.is_none() && h.vector.as_ref().is_some_and(|v| v.score < 0.999)),
        "{:?}",
        hybrid.hits
    );

    // vectors: the credit line's own text is nearest to its own embedding
    // (the scripted vectors hash the text), unless that embedding is hidden
    let exact = eventually("the changed credit line to be embedded", async || {
        let hits = search_as(&server, &tester, request(&credit_line, SearchMode::Vector))
            .await
            .map_err(|s| s.to_string())?
            .hits;
        match hits.iter().find(|h| h.key == key) {
            Some(hit) if hit.score > 0.999 => Ok(hit.score),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(exact > 0.999);
    let nearest = search_as(&server, &narrow, request(&credit_line, SearchMode::Vector))
        .await
        .unwrap();
    assert!(!nearest.hits.is_empty(), "titles and media still searched");
    assert!(
        nearest.hits.iter().all(|h| h.score < 0.999),
        "{:?}",
        nearest.hits.iter().find(|h| h.score >= 0.999)
    );
    server.stop().await;
}

#[tokio::test]
async fn search_documents_shows_the_model_only_the_fields_the_caller_sees() {
    let arguments = serde_json::json!({"collection": "artworks", "query": "paper", "k": 5});
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("search_documents", arguments.to_string()),
        ScriptedTurn::text("Some works on paper."),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        search: true,
        extra_toml: NARROW_ROLE.into(),
        ..Options::default()
    })
    .await;
    wait_until_indexed(&server, false).await;
    let events = ask_all_as(&server, ask("Which works are on paper?"), &narrow())
        .await
        .unwrap();
    let result = first_tool_result(&events);
    let Some(Outcome::Search(found)) = &result.outcome else {
        panic!("{result:?}")
    };
    assert_eq!(found.hits.len(), 5, "{found:?}");
    assert!(found.hits.iter().all(|h| h.fields.is_empty()), "{found:?}");

    let requests = model.requests();
    let description = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["function"]["name"] == "search_documents")
        .expect("search_documents offered")["function"]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        description.contains(
            "searched text: title, medium; filters: acquisition_year (integer); returned fields: \n"
        ),
        "{description}"
    );
    for hidden in ["credit_line", "classification (", "artist (", "url"] {
        assert!(!description.contains(hidden), "{hidden} in {description}");
    }
    let content = requests[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("tool result sent back to the model")["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(content.contains("hits: 5"), "{content}");
    // the urls the tester would get for the same hits are not in it
    let client = server.db.pool().get().await.unwrap();
    let ids: Vec<i32> = found.hits.iter().map(|h| h.key.parse().unwrap()).collect();
    let urls: Vec<String> = client
        .query(
            "SELECT url FROM tate.artworks WHERE id = ANY($1) AND url IS NOT NULL",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!urls.is_empty());
    for url in &urls {
        assert!(!content.contains(url.as_str()), "{url} in {content}");
    }
    server.stop().await;
}
