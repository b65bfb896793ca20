#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Lookups and searches over built summaries (real PostgreSQL), and the
//! gRPC service end to end over a real socket.

#[path = "support/fixture.rs"]
mod fixture;

use std::sync::Arc;

use fixture::ENTITIES;
use quarry_auth::Principal;
use quarry_db::testing::TestDb;
use quarry_proto::v1 as pb;
use quarry_proto::v1::summary_service_client::SummaryServiceClient;
use quarry_proto::v1::summary_service_server::SummaryServiceServer;
use quarry_summary::{
    BuildOptions, GetRequest, GetResponse, MatchKind, Retrieval, SearchRequest, SummaryError,
    SummaryGrpc, SummaryTool,
};
use tonic::Code;
use tonic_types::StatusExt;

async fn built(embedded: bool) -> (TestDb, SummaryTool) {
    let db = fixture::database().await;
    let tool = if embedded {
        fixture::open_embedded(&db).await
    } else {
        fixture::open(&db, None).await
    };
    let report = tool
        .build(BuildOptions::all("test"), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.built, ENTITIES);
    (db, tool)
}

async fn get(
    tool: &SummaryTool,
    kind: Option<&str>,
    entity: &str,
) -> Result<GetResponse, SummaryError> {
    tool.get(
        &fixture::caller(),
        GetRequest {
            kind: kind.map(str::to_owned),
            entity: Some(entity.to_owned()),
            ..GetRequest::default()
        },
    )
    .await
}

fn first(response: &GetResponse) -> (&str, &str) {
    let s = &response.summaries[0];
    (s.entity_key.as_str(), s.entity_name.as_str())
}

#[tokio::test]
async fn entities_resolve_by_key_name_and_fuzzy_name() {
    let (db, tool) = built(false).await;

    // key, within a kind and across kinds
    let by_key = get(&tool, Some("artist"), "1293").await.unwrap();
    assert_eq!(by_key.matched, MatchKind::Key);
    assert_eq!(first(&by_key), ("1293", "David Hockney"));
    assert_eq!(by_key.summaries[0].score, 1.0);
    assert_eq!(by_key.summaries[0].id(), "summary:artist:1293");
    let across = get(&tool, None, "tate").await.unwrap();
    assert_eq!(
        (across.matched, across.summaries[0].kind.as_str()),
        (MatchKind::Key, "collection")
    );

    // exact name, ignoring case, accents and punctuation
    let by_name = get(&tool, Some("artist"), "david HOCKNEY").await.unwrap();
    assert_eq!(
        (by_name.matched, first(&by_name).0),
        (MatchKind::Name, "1293")
    );
    let accents = get(&tool, None, "zoe leger").await.unwrap();
    assert_eq!(
        (accents.matched, first(&accents).1),
        (MatchKind::Name, "Zoë Léger")
    );
    let alfred = get(&tool, Some("artist"), "Alfred Turner").await.unwrap();
    assert_eq!(
        (alfred.matched, first(&alfred).0),
        (MatchKind::Name, "2076")
    );

    // fuzzy: the heavily weighted Turner wins, the others are alternatives
    let turner = get(&tool, Some("artist"), "turner").await.unwrap();
    assert_eq!(turner.matched, MatchKind::Fuzzy);
    assert_eq!(first(&turner), ("558", "Joseph Mallord William Turner"));
    assert_eq!(turner.summaries[0].score, 1.0);
    let alternatives: Vec<&str> = turner
        .alternatives
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        alternatives,
        ["William Turner of Oxford", "Alfred Turner", "W. Turner"]
    );
    let initials = get(&tool, Some("artist"), "J. M. W. Turner").await.unwrap();
    assert_eq!(
        (initials.matched, first(&initials).0),
        (MatchKind::Fuzzy, "558")
    );
    assert_eq!(initials.summaries[0].score, 0.85);
    let typo = get(&tool, None, "tunrer").await.unwrap();
    assert_eq!((typo.matched, first(&typo).0), (MatchKind::Fuzzy, "558"));
    let hockney = get(&tool, None, "Hockney").await.unwrap();
    assert_eq!(
        (hockney.matched, first(&hockney).1),
        (MatchKind::Fuzzy, "David Hockney")
    );

    // nothing close: not found, with the closest anyway
    let missing = get(&tool, Some("artist"), "zzzz").await.unwrap_err();
    let SummaryError::NotFound {
        entity,
        kind,
        closest,
    } = &missing
    else {
        panic!("{missing}");
    };
    assert_eq!((entity.as_str(), kind.as_deref()), ("zzzz", Some("artist")));
    assert_eq!(closest.len(), 5);
    assert_eq!(closest[0].name, "Joseph Mallord William Turner");
    assert!(missing.to_string().starts_with(
        "no artist matching \"zzzz\"; closest: Joseph Mallord William Turner (artist 558), "
    ));

    // freshness on every summary
    let s = &by_key.summaries[0];
    assert!(s.checked_at >= s.computed_at);
    assert_eq!(s.last_error, None);
    assert_eq!(s.data_version.len(), 16);

    // bad requests name the field
    for (request, field) in [
        (
            GetRequest {
                kind: Some("painter".into()),
                entity: Some("x".into()),
                ..GetRequest::default()
            },
            "kind",
        ),
        (GetRequest::default(), "kind"),
        (
            GetRequest {
                kind: Some("artist".into()),
                limit: 101,
                ..GetRequest::default()
            },
            "limit",
        ),
        (
            GetRequest {
                entity: Some("?!".into()),
                ..GetRequest::default()
            },
            "entity",
        ),
    ] {
        let e = tool.get(&fixture::caller(), request).await.unwrap_err();
        assert!(
            matches!(e, SummaryError::InvalidArgument { field: ref f, .. } if f == field),
            "{e}"
        );
    }
    let e = tool
        .get(
            &fixture::caller(),
            GetRequest {
                kind: Some("painter".into()),
                ..GetRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("kinds: artist, collection"), "{e}");
    db.drop_db().await;
}

#[tokio::test]
async fn a_kind_lists_by_weight_with_its_total() {
    let (db, tool) = built(false).await;
    let caller = fixture::caller();
    let page = |limit, offset| {
        tool.get(
            &caller,
            GetRequest {
                kind: Some("artist".into()),
                entity: None,
                limit,
                offset,
            },
        )
    };
    let first_page = page(3, 0).await.unwrap();
    assert_eq!(first_page.matched, MatchKind::Listing);
    assert_eq!(first_page.total, 8);
    let names: Vec<&str> = first_page
        .summaries
        .iter()
        .map(|s| s.entity_name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Joseph Mallord William Turner",
            "David Hockney",
            "Barbara Hepworth"
        ]
    );
    let rest = page(0, 3).await.unwrap();
    assert_eq!(rest.summaries.len(), 5);
    assert!(rest.summaries.iter().all(|s| s.score == 0.0));
    let past = page(10, 8).await.unwrap();
    assert_eq!((past.summaries.len(), past.total), (0, 8));
    db.drop_db().await;
}

#[tokio::test]
async fn vector_search_over_embedded_summaries() {
    let (db, tool) = built(true).await;
    let hockney = get(&tool, Some("artist"), "1293")
        .await
        .unwrap()
        .summaries
        .remove(0);
    // the scripted embedder maps equal texts to equal vectors
    let found = tool
        .search(
            &fixture::caller(),
            SearchRequest {
                query: hockney.text.clone(),
                kinds: vec![],
                k: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(found.retrieval, Retrieval::Vector);
    assert!(found.searched > 3, "{}", found.searched);
    assert_eq!(found.covered, found.searched, "every summary embedded");
    assert_eq!(found.summaries.len(), 3);
    assert_eq!(found.summaries[0].entity_key, "1293");
    assert!(
        (found.summaries[0].score - 1.0).abs() < 1e-5,
        "{}",
        found.summaries[0].score
    );
    assert!(found.summaries[1].score <= found.summaries[0].score);

    let only = tool
        .search(
            &fixture::caller(),
            SearchRequest {
                query: hockney.text.clone(),
                kinds: vec!["collection".into()],
                k: 0,
            },
        )
        .await
        .unwrap();
    assert_eq!(only.summaries.len(), 1);
    assert_eq!(only.summaries[0].kind, "collection");

    for (request, field) in [
        (
            SearchRequest {
                query: " ".into(),
                ..SearchRequest::default()
            },
            "query",
        ),
        (
            SearchRequest {
                query: "x".into(),
                k: 101,
                ..SearchRequest::default()
            },
            "k",
        ),
        (
            SearchRequest {
                query: "x".into(),
                kinds: vec!["artist".into(), "nope".into()],
                k: 1,
            },
            "kinds[1]",
        ),
    ] {
        let e = tool.search(&fixture::caller(), request).await.unwrap_err();
        assert!(
            matches!(e, SummaryError::InvalidArgument { field: ref f, .. } if f == field),
            "{e}"
        );
    }
    db.drop_db().await;
}

#[tokio::test]
async fn full_text_search_without_an_embedder() {
    let (db, tool) = built(false).await;
    let found = tool
        .search(
            &fixture::caller(),
            SearchRequest {
                query: "Hockney etching".into(),
                kinds: vec![],
                k: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(found.retrieval, Retrieval::FullText);
    assert_eq!(found.summaries.len(), 1);
    assert_eq!(found.summaries[0].entity_name, "David Hockney");
    assert!(found.summaries[0].score > 0.0);
    let bronze = tool
        .search(
            &fixture::caller(),
            SearchRequest {
                query: "bronze".into(),
                kinds: vec!["artist".into()],
                k: 5,
            },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = bronze
        .summaries
        .iter()
        .map(|s| s.entity_key.as_str())
        .collect();
    // Hepworth's media list starts with Bronze (3 works); Alfred Turner's has it too
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"11") && keys.contains(&"2076"), "{keys:?}");
    db.drop_db().await;
}

/// Serves `tool` on 127.0.0.1:0 with an interceptor that plays the auth
/// and policy layers: the principal has the role `tester` (every summaries
/// scope) narrowed to the scopes of the `x-scopes` header (`summaries` when
/// absent), resolved into the request's grant.
async fn serve(
    tool: SummaryTool,
) -> (
    SummaryServiceClient<tonic::transport::Channel>,
    tokio::sync::oneshot::Sender<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = SummaryServiceServer::with_interceptor(
        SummaryGrpc::new(Arc::new(tool)),
        |mut request: tonic::Request<()>| {
            let scopes = request
                .metadata()
                .get("x-scopes")
                .and_then(|v| v.to_str().ok())
                .map_or_else(
                    || vec!["summaries".to_owned()],
                    |s| s.split(',').map(str::to_owned).collect(),
                );
            let principal = Principal {
                tenant: "t1".into(),
                subject: "tester".into(),
                roles: vec!["tester".into()],
                scopes,
            };
            let policy = quarry_auth::Policy::new(&quarry_auth::PolicyConfig {
                hash_salt: String::new(),
                roles: [(
                    "tester".to_owned(),
                    quarry_auth::RoleConfig {
                        scopes: vec!["summaries".into(), "summaries:build".into()],
                        summary_kinds: vec!["*".into()],
                        ..quarry_auth::RoleConfig::default()
                    },
                )]
                .into(),
            })
            .expect("a valid policy");
            request
                .extensions_mut()
                .insert(Arc::new(policy.grant(&principal)));
            request.extensions_mut().insert(principal);
            Ok(request)
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let client = SummaryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, stop)
}

fn with_scopes<T>(message: T, scopes: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-scopes", scopes.parse().unwrap());
    request
}

#[tokio::test]
async fn grpc_end_to_end() {
    let db = fixture::database().await;
    let (mut client, stop) = serve(fixture::open_embedded(&db).await).await;

    // building needs the scope
    let denied = client
        .build_summaries(with_scopes(pb::BuildSummariesRequest::default(), "sql"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = client
        .build_summaries(with_scopes(
            pb::BuildSummariesRequest {
                entity_keys: vec!["1".into()],
                ..Default::default()
            },
            "summaries:build",
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(
        bad.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "entity_keys"
    );

    // progress, then the report
    let mut stream = client
        .build_summaries(with_scopes(
            pb::BuildSummariesRequest::default(),
            "summaries:build",
        ))
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        events.push(message.event.unwrap());
    }
    let Some(pb::build_summaries_response::Event::Report(report)) = events.pop() else {
        panic!("the last event is the report: {events:?}");
    };
    assert_eq!(
        (report.built, report.entities, report.trigger.as_str()),
        (ENTITIES, ENTITIES, "rpc")
    );
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| matches!(e, pb::build_summaries_response::Event::Progress(_)))
    );

    // a fuzzy lookup
    let found = client
        .get_summaries(pb::GetSummariesRequest {
            kind: "artist".into(),
            entity: "turner".into(),
            limit: 0,
            offset: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.r#match, pb::EntityMatchKind::Fuzzy as i32);
    let summary = &found.summaries[0];
    assert_eq!(
        (summary.id.as_str(), summary.entity_name.as_str()),
        ("summary:artist:558", "Joseph Mallord William Turner")
    );
    let facts: serde_json::Value = serde_json::from_str(&summary.facts_json).unwrap();
    assert_eq!(facts["acquisitions"]["total"], serde_json::json!(7));
    assert!(summary.computed_at.is_some() && summary.checked_at.is_some());
    assert_eq!(found.alternatives.len(), 3);

    // not found, with the closest names and an ErrorInfo
    let missing = client
        .get_summaries(pb::GetSummariesRequest {
            kind: "artist".into(),
            entity: "zzzz".into(),
            limit: 0,
            offset: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(
        missing.message().starts_with(
            "no artist matching \"zzzz\"; closest: Joseph Mallord William Turner (artist 558)"
        ),
        "{}",
        missing.message()
    );
    let info = missing.get_error_details().error_info().cloned().unwrap();
    assert_eq!(info.reason, "ENTITY_NOT_FOUND");
    let closest: serde_json::Value = serde_json::from_str(&info.metadata["closest"]).unwrap();
    assert_eq!(closest[0]["key"], "558");

    let bad_limit = client
        .get_summaries(pb::GetSummariesRequest {
            kind: "artist".into(),
            entity: String::new(),
            limit: 500,
            offset: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_limit.code(), Code::InvalidArgument);
    assert_eq!(
        bad_limit
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "limit"
    );

    let searched = client
        .search_summaries(pb::SearchSummariesRequest {
            query: "David Hockney".into(),
            kinds: vec![],
            k: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (searched.retrieval.as_str(), searched.summaries.len()),
        ("vector", 2)
    );
    let empty = client
        .search_summaries(pb::SearchSummariesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        empty
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "query"
    );

    let kinds = client
        .list_summary_kinds(pb::ListSummaryKindsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, u64)> = kinds
        .kinds
        .iter()
        .map(|k| (k.name.as_str(), k.summaries))
        .collect();
    assert_eq!(names, [("artist", 8), ("collection", 1)]);
    assert_eq!(kinds.last_build.unwrap().trigger, "rpc");

    let _ = stop.send(());
    db.drop_db().await;
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_build() {
    let db = fixture::database().await;
    let (started_tx, mut started) = tokio::sync::mpsc::channel(1);
    let tool = fixture::open(&db, Some(Arc::new(fixture::Hanging(started_tx)))).await;
    let (mut client, stop) = serve(tool).await;
    let mut stream = client
        .build_summaries(with_scopes(
            pb::BuildSummariesRequest::default(),
            "summaries:build",
        ))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(pb::build_summaries_response::Event::Progress(_))
    ));
    // the build is waiting in the embedder, holding the lock
    started.recv().await.unwrap();
    drop(stream);
    assert!(
        fixture::lock_released(&db).await,
        "the build kept running (and holding its lock) after the client went away"
    );
    let _ = stop.send(());
    db.drop_db().await;
}

/// A tenant whose share of concurrent summary reads is taken is told to
/// retry (RESOURCE_EXHAUSTED with RetryInfo) on each read; another tenant
/// reads as usual, and the tenant reads again once a slot is free.
#[tokio::test]
async fn a_tenant_past_its_share_of_summary_reads_is_told_to_retry() {
    let (db, tool) = built(false).await;
    let shares = tool.tenant_shares().clone();
    assert!(shares.limit() >= 1);
    let held: Vec<_> = futures::future::join_all((0..shares.limit()).map(|_| shares.acquire("t1")))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let caller = fixture::caller();
    let refusals = [
        get(&tool, Some("artist"), "Turner").await.unwrap_err(),
        tool.search(
            &caller,
            SearchRequest {
                query: "sculpture".into(),
                ..SearchRequest::default()
            },
        )
        .await
        .unwrap_err(),
        tool.kinds(&caller).await.unwrap_err(),
    ];
    for busy in refusals {
        assert!(matches!(busy, SummaryError::Busy(_)), "{busy}");
        let status = quarry_proto::status_of(&busy);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_error_details().retry_info().is_some());
    }
    let other = quarry_auth::Caller::operator(Principal {
        tenant: "t2".into(),
        subject: "tester".into(),
        roles: vec![],
        scopes: vec![],
    });
    assert!(tool.kinds(&other).await.is_ok());
    drop(held);
    assert!(get(&tool, Some("artist"), "Turner").await.is_ok());
    db.drop_db().await;
}
