//! `SummaryService` end to end: a real server with the shipped Tate summary
//! kinds (`demo/summaries/tate.toml`) over the Tate slice, built at start-up;
//! facts checked against independent SQL over the source rows; rebuilds that
//! skip unchanged entities and reproduce identical text; fuzzy and unknown
//! entities; bad definitions refused at start-up; and the Assistant's
//! `get_summaries` tool with a scripted model.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::collections::BTreeMap;

use futures::StreamExt;
use quarry_llm::testing::{ScriptedServer, ScriptedTurn};
use quarry_proto::v1::{
    BuildReport, BuildSummariesRequest, CitationKind, EntityMatchKind, GetSummariesRequest,
    GetSummariesResponse, SearchSummariesRequest, Summary, build_summaries_response,
    tool_result::Outcome,
};
use quarry_tests::{
    Options, TestServer, ask, ask_all, authed, final_answer, first_tool_result, token,
    token_with_scopes,
};
use serde_json::Value as Json;
use tonic::Code;

async fn start() -> TestServer {
    TestServer::start(Options {
        summaries: true,
        ..Default::default()
    })
    .await
}

async fn get(server: &TestServer, kind: &str, entity: &str) -> GetSummariesResponse {
    server
        .summaries()
        .get_summaries(authed(
            GetSummariesRequest {
                kind: kind.into(),
                entity: entity.into(),
                limit: 0,
                offset: 0,
            },
            &token("t1"),
        ))
        .await
        .unwrap_or_else(|s| panic!("get {kind}/{entity}: {s:?}"))
        .into_inner()
}

fn facts(summary: &Summary) -> Json {
    serde_json::from_str(&summary.facts_json).unwrap()
}

/// Every summary of every kind, by id.
async fn all_summaries(server: &TestServer) -> BTreeMap<String, Summary> {
    let mut out = BTreeMap::new();
    for kind in ["artist", "movement", "decade", "collection"] {
        let mut offset = 0;
        loop {
            let page = server
                .summaries()
                .get_summaries(authed(
                    GetSummariesRequest {
                        kind: kind.into(),
                        entity: String::new(),
                        limit: 100,
                        offset,
                    },
                    &token("t1"),
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.r#match, EntityMatchKind::Listing as i32);
            let n = page.summaries.len() as u32;
            for s in page.summaries {
                out.insert(s.id.clone(), s);
            }
            offset += n;
            if n == 0 || u64::from(offset) >= page.total {
                break;
            }
        }
    }
    out
}

/// Runs `BuildSummaries` with the build scope and returns the final report.
async fn build(server: &TestServer, request: BuildSummariesRequest) -> BuildReport {
    let mut stream = server
        .summaries()
        .build_summaries(authed(
            request,
            &token_with_scopes("t1", &["summaries:build"]),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut report = None;
    let mut progress = 0;
    while let Some(event) = stream.next().await {
        match event.unwrap().event {
            Some(build_summaries_response::Event::Progress(_)) => progress += 1,
            Some(build_summaries_response::Event::Report(r)) => report = Some(r),
            None => panic!("empty build event"),
        }
    }
    assert!(progress > 0, "no progress events before the report");
    report.expect("a final report")
}

async fn scalar_i64(server: &TestServer, sql: &str) -> i64 {
    let client = server.db.pool().get().await.unwrap();
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// `(id, name, works)` of the artist credited on the most works of the slice.
async fn busiest_artist(server: &TestServer) -> (i32, String, i64) {
    let client = server.db.pool().get().await.unwrap();
    let row = client
        .query_one(
            "SELECT a.id, a.name, count(DISTINCT c.artwork_id)
               FROM tate.artists a JOIN tate.artwork_contributors c ON c.artist_id = a.id
              GROUP BY a.id, a.name ORDER BY 3 DESC, a.id LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// Per-decade `(period, value)` pairs as facts hold them (`points`).
fn points(series: &Json) -> Vec<(i64, i64)> {
    series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_i64().unwrap()))
        .collect()
}

#[tokio::test]
async fn built_at_start_up_with_figures_that_match_independent_sql() {
    let server = start().await;
    let listed = quarry_tests::wait_until_summaries_built(&server).await;
    let report = listed.last_build.clone().unwrap();
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert_eq!(report.trigger, "startup");
    let count = |name: &str| {
        listed
            .kinds
            .iter()
            .find(|k| k.name == name)
            .unwrap_or_else(|| panic!("kind {name} in {:?}", listed.kinds))
            .summaries
    };
    let artists = scalar_i64(
        &server,
        "SELECT count(DISTINCT artist_id) FROM tate.artwork_contributors",
    )
    .await;
    let decades = scalar_i64(
        &server,
        "SELECT count(DISTINCT acquisition_year / 10) FROM tate.artworks WHERE acquisition_year IS NOT NULL",
    )
    .await;
    assert_eq!(count("artist") as i64, artists);
    assert_eq!(count("decade") as i64, decades);
    assert_eq!(count("collection"), 1);
    assert_eq!(report.entities, report.built + report.unchanged);

    // the whole collection: totals and women's share per decade, recomputed here
    let collection = get(&server, "collection", "tate").await;
    assert_eq!(collection.r#match, EntityMatchKind::Key as i32);
    let summary = &collection.summaries[0];
    assert_eq!(summary.id, "summary:collection:tate");
    let f = facts(summary);
    let works = scalar_i64(&server, "SELECT count(*) FROM tate.artworks").await;
    assert_eq!(f["totals"]["works"].as_i64(), Some(works));
    let acquired = scalar_i64(
        &server,
        "SELECT count(*) FROM tate.artworks WHERE acquisition_year IS NOT NULL",
    )
    .await;
    assert_eq!(f["acquisitions"]["total"].as_i64(), Some(acquired));
    let client = server.db.pool().get().await.unwrap();
    let shares: Vec<(i64, f64)> = client
        .query(
            "SELECT (w.acquisition_year / 10 * 10)::int8,
                    (round(100.0 * count(*) FILTER (WHERE a.gender = 'Female') / count(*), 1))::float8
               FROM tate.artworks w
               LEFT JOIN tate.artwork_contributors c ON c.artwork_id = w.id AND c.position = 0
               LEFT JOIN tate.artists a ON a.id = c.artist_id
              WHERE w.acquisition_year IS NOT NULL
              GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let from_facts: Vec<(i64, f64)> = f["gender"]["shares"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(from_facts, shares, "women's share per decade");
    assert!(
        summary.text.contains(&thousands(works)),
        "the text states the total with separators: {}",
        summary.text
    );
    assert!(summary.computed_at.is_some() && summary.checked_at.is_some());
    assert!(
        summary.checked_at.as_ref().unwrap().seconds
            >= summary.computed_at.as_ref().unwrap().seconds
    );
    assert!(summary.last_error.is_empty());

    // one artist, by exact name (case-insensitive): works and acquisitions per decade
    let (id, name, works) = busiest_artist(&server).await;
    let artist = get(&server, "artist", &name.to_uppercase()).await;
    assert_eq!(artist.r#match, EntityMatchKind::Name as i32);
    let summary = &artist.summaries[0];
    assert_eq!(summary.id, format!("summary:artist:{id}"));
    assert_eq!(summary.entity_name, name);
    let f = facts(summary);
    assert_eq!(f["works"]["total"].as_i64(), Some(works));
    let per_decade: Vec<(i64, i64)> = client
        .query(
            "SELECT (w.acquisition_year / 10 * 10)::int8, count(DISTINCT w.id)
               FROM tate.artworks w JOIN tate.artwork_contributors c ON c.artwork_id = w.id
              WHERE c.artist_id = $1 AND w.acquisition_year IS NOT NULL GROUP BY 1 ORDER BY 1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let nonzero: Vec<(i64, i64)> = points(&f["acquisitions"])
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect();
    assert_eq!(nonzero, per_decade, "{name}'s acquisitions per decade");
    assert!(summary.text.starts_with(&name), "{}", summary.text);

    // one decade, by name ("1980s"): works acquired
    let (decade, in_decade): (i32, i64) = {
        let row = client
            .query_one(
                "SELECT acquisition_year / 10 * 10, count(*) FROM tate.artworks
                  WHERE acquisition_year IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let found = get(&server, "decade", &format!("{decade}s")).await;
    assert_eq!(found.r#match, EntityMatchKind::Name as i32);
    assert_eq!(
        facts(&found.summaries[0])["totals"]["works"].as_i64(),
        Some(in_decade)
    );
    drop(client);
    server.stop().await;
}

/// `12345` → `12,345`.
fn thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[tokio::test]
async fn rebuilds_skip_unchanged_entities_and_reproduce_identical_text() {
    let server = start().await;
    quarry_tests::wait_until_summaries_built(&server).await;
    let before = all_summaries(&server).await;
    assert!(before.len() > 10, "{} summaries", before.len());

    // nothing changed: every entity is skipped
    let report = build(&server, BuildSummariesRequest::default()).await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert_eq!(report.built, 0);
    assert_eq!(report.unchanged, before.len() as u64);
    assert_eq!(report.trigger, "rpc");

    // forced: everything recomputed, byte-identical
    let report = build(
        &server,
        BuildSummariesRequest {
            force: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(report.built, before.len() as u64);
    let again = all_summaries(&server).await;
    assert_eq!(again.len(), before.len());
    for (id, s) in &before {
        let t = &again[id];
        assert_eq!(t.text, s.text, "{id}: text differs after a forced rebuild");
        assert_eq!(
            facts(t),
            facts(s),
            "{id}: facts differ after a forced rebuild"
        );
        assert_eq!(t.data_version, s.data_version, "{id}");
    }

    // one work moves to another acquisition decade: only the entities that
    // read it are rebuilt
    let (artist, _, _) = busiest_artist(&server).await;
    let client = server.db.pool().get().await.unwrap();
    let (work, year): (i32, i32) = {
        let row = client
            .query_one(
                "SELECT w.id, w.acquisition_year FROM tate.artworks w
                   JOIN tate.artwork_contributors c ON c.artwork_id = w.id AND c.position = 0
                  WHERE c.artist_id = $1 AND w.acquisition_year IS NOT NULL
                  ORDER BY w.id LIMIT 1",
                &[&artist],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let moved_to = if year >= 2000 { 1900 } else { 2010 };
    client
        .execute(
            "UPDATE tate.artworks SET acquisition_year = $2 WHERE id = $1",
            &[&work, &moved_to],
        )
        .await
        .unwrap();
    drop(client);
    let report = build(&server, BuildSummariesRequest::default()).await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(
        report.built >= 3 && report.built < before.len() as u64 / 2,
        "the artist, two decades and the collection (and the artist's movements): built {} of {}",
        report.built,
        before.len()
    );
    assert_eq!(report.built + report.unchanged, report.entities);
    let after = all_summaries(&server).await;
    let id = format!("summary:artist:{artist}");
    assert_ne!(after[&id].data_version, before[&id].data_version);
    let decade_of_move = i64::from(moved_to / 10 * 10);
    assert!(
        points(&facts(&after[&id])["acquisitions"])
            .iter()
            .any(|(p, v)| *p == decade_of_move && *v > 0),
        "the moved work shows in the {decade_of_move}s"
    );
    let unchanged_ids: Vec<&String> = before
        .keys()
        .filter(|k| {
            after
                .get(*k)
                .is_some_and(|a| a.data_version == before[*k].data_version)
        })
        .collect();
    assert_eq!(unchanged_ids.len() as u64, report.unchanged);

    // the build RPC needs its scope
    let denied = server
        .summaries()
        .build_summaries(authed(BuildSummariesRequest::default(), &token("t1")))
        .await;
    let status = match denied {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .next()
            .await
            .expect("an event or an error")
            .expect_err("a build without the scope"),
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn entities_resolve_fuzzily_and_unknown_ones_name_the_closest() {
    let server = start().await;
    quarry_tests::wait_until_summaries_built(&server).await;
    let (id, name, _) = busiest_artist(&server).await;

    // a typo in the last name still finds the artist
    let surname = name.split_whitespace().last().unwrap().to_lowercase();
    let mut typo: Vec<char> = surname.chars().collect();
    typo.swap(1, 2);
    let typo: String = typo.into_iter().collect();
    let found = get(&server, "artist", &typo).await;
    assert_eq!(found.r#match, EntityMatchKind::Fuzzy as i32, "{typo}");
    assert!(
        found.summaries[0]
            .entity_name
            .to_lowercase()
            .contains(&surname)
            || found.alternatives.iter().any(|c| c.key == id.to_string()),
        "{typo} → {:?} / {:?}",
        found.summaries[0].entity_name,
        found.alternatives
    );

    // nothing close: NOT_FOUND naming the closest
    let status = server
        .summaries()
        .get_summaries(authed(
            GetSummariesRequest {
                kind: "artist".into(),
                entity: "Qqqzzx Vvvwkk".into(),
                ..Default::default()
            },
            &token("t1"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("closest"), "{}", status.message());

    // bad requests name the field
    for (request, field) in [
        (
            GetSummariesRequest {
                kind: "artist".into(),
                limit: 1000,
                ..Default::default()
            },
            "limit",
        ),
        (
            GetSummariesRequest {
                kind: "painter".into(),
                entity: "x".into(),
                ..Default::default()
            },
            "kind",
        ),
        (GetSummariesRequest::default(), "kind"),
    ] {
        let status = server
            .summaries()
            .get_summaries(authed(request.clone(), &token("t1")))
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        assert!(
            status.message().contains(field),
            "{request:?}: {}",
            status.message()
        );
    }

    // full-text search over the texts (no embedder configured)
    let found = server
        .summaries()
        .search_summaries(authed(
            SearchSummariesRequest {
                query: "works by women".into(),
                kinds: vec!["collection".into()],
                k: 3,
            },
            &token("t1"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.retrieval, "full_text");
    assert_eq!(
        (found.searched, found.covered),
        (1, 1),
        "one collection summary, all searchable"
    );
    assert_eq!(found.summaries.len(), 1);
    assert_eq!(found.summaries[0].id, "summary:collection:tate");
    assert!(found.summaries[0].score > 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_definition_whose_sql_fails_is_refused_at_start_up_with_its_name() {
    let server = start().await;
    let url = server.db.url().to_string();
    let config = quarry_server::Config::from_toml_layers(&[&format!(
        r#"
        [database]
        url = "{url}"
        [auth]
        jwt_secret = "0123456789abcdef0123456789abcdef"
        [summary]
        [[summary.kinds]]
        name = "painter"
        entity = "artist"
        description = "d"
        entities = "SELECT id AS key, name FROM tate.artists"
        template = "{{{{ entity.name }}}}: {{{{ works.total }}}}"
        [[summary.kinds.figures]]
        name = "works"
        shape = "values"
        sql = "SELECT count(*) AS total FROM tate.artworks WHERE painter_id = $1"
        "#
    )])
    .unwrap();
    let error = quarry_server::summary_tool(&config, &config.database.pools(), None)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(text.contains("painter.works"), "{text}");
    assert!(text.contains("painter_id"), "PostgreSQL's message: {text}");
    server.stop().await;
}

#[tokio::test]
async fn the_model_gets_summaries_and_the_answer_cites_them() {
    // find the artist first, on a server without a model
    let probe = start().await;
    quarry_tests::wait_until_summaries_built(&probe).await;
    let (id, name, works) = busiest_artist(&probe).await;
    probe.stop().await;

    let arguments =
        serde_json::json!({ "entity": name.to_lowercase(), "kind": "artist" }).to_string();
    let model = ScriptedServer::start(vec![
        ScriptedTurn::tool_call("get_summaries", arguments),
        ScriptedTurn::text(format!("The Tate holds {works} works by {name}.")),
    ])
    .await;
    let server = TestServer::start(Options {
        model_base_url: Some(model.base_url()),
        summaries: true,
        ..Default::default()
    })
    .await;
    quarry_tests::wait_until_summaries_built(&server).await;
    let events = ask_all(&server, ask(&format!("How has the Tate collected {name}?")))
        .await
        .unwrap();
    let result = first_tool_result(&events);
    assert_eq!(result.tool_name, "get_summaries");
    let Some(Outcome::Summaries(found)) = &result.outcome else {
        panic!("a summaries outcome: {result:?}");
    };
    let summary_id = format!("summary:artist:{id}");
    assert_eq!(found.summaries[0].id, summary_id);
    let answer = final_answer(&events);
    assert!(
        answer
            .citations
            .iter()
            .any(|c| c.kind == CitationKind::Summary as i32 && c.source_id == summary_id),
        "{:?}",
        answer.citations
    );
    // the model was offered the tool and saw the facts as delimited data
    let requests = model.requests();
    let offered = requests[0]["tools"].to_string();
    assert!(offered.contains("get_summaries"), "{offered}");
    let second = requests[1]["messages"].to_string();
    assert!(second.contains(&summary_id), "{second}");
    assert!(second.contains("facts"), "{second}");
    server.stop().await;
}
