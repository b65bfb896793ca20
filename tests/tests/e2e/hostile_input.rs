//! Hostile input end to end (issue 14, item 4): every generated server
//! decodes with `quarry_proto::codec::CheckedCodec`, so a NUL (U+0000) in
//! any string field, invalid UTF-8 or a message that does not decode is
//! `INVALID_ARGUMENT` before a handler runs — never an answered turn that
//! PostgreSQL then cannot store. A message over tonic's decode limit (4 MiB
//! by default) is refused by tonic itself, as `OUT_OF_RANGE`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use quarry_proto::{
    codec::CheckedCodec,
    v1::{
        AskMode, AskRequest, AskResponse, FieldValue, Filter, FilterList, ListConversationsRequest,
        SearchRequest, Value, filter, value,
    },
};
use quarry_tests::{Options, TestServer, ask, ask_all_as, authed, token};
use tonic::{Code, Status, codegen::http::uri::PathAndQuery};
use tonic_types::StatusExt as _;

/// The one `BadRequest` field violation of `status`: `(field, description)`.
fn violation(status: &Status) -> (String, String) {
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .unwrap_or_else(|| panic!("a BadRequest detail: {status:?}"))
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    (
        violations[0].field.clone(),
        violations[0].description.clone(),
    )
}

async fn conversations(server: &TestServer, token: &str) -> usize {
    server
        .assistant()
        .list_conversations(authed(ListConversationsRequest::default(), token))
        .await
        .unwrap()
        .into_inner()
        .conversations
        .len()
}

#[tokio::test]
async fn a_nul_in_a_question_is_refused_and_no_turn_is_stored() {
    let server = TestServer::start(Options::default()).await;
    let token = token("hostile-nul");
    let golden = "How many artworks are in the Tate collection?";
    let request = AskRequest {
        mode: AskMode::Router as i32,
        ..ask(&format!("{golden}\u{0}"))
    };
    let status = ask_all_as(&server, request, &token).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violation(&status),
        (
            "question".to_string(),
            "must not contain a NUL character (U+0000)".to_string()
        )
    );
    assert_eq!(conversations(&server, &token).await, 0);

    // The same question without the NUL is answered and stored, so the
    // empty list above is the refusal's doing.
    let request = AskRequest {
        mode: AskMode::Router as i32,
        ..ask(golden)
    };
    ask_all_as(&server, request, &token).await.unwrap();
    assert_eq!(conversations(&server, &token).await, 1);
    server.stop().await;
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_invalid_argument_not_internal() {
    let server = TestServer::start(Options::default()).await;
    // google.protobuf.Any is `string type_url = 1; bytes value = 2;`, the
    // wire shape of AskRequest's `string question = 1; string
    // conversation_id = 2;`: its bytes put invalid UTF-8 where the server
    // decodes a string. (Any reached through tonic-types' google.rpc.Status.)
    let mut carrier = tonic_types::pb::Status::default();
    carrier.details.push(Default::default());
    let mut raw = carrier.details.remove(0);
    raw.type_url = "how many artworks?".to_string();
    raw.value = vec![0xff, 0xfe, b'x'];

    let mut grpc = tonic::client::Grpc::new(server.channel());
    grpc.ready().await.unwrap();
    let codec: CheckedCodec<_, AskResponse> = CheckedCodec::default();
    let result = grpc
        .server_streaming(
            authed(raw, &token("hostile-utf8")),
            PathAndQuery::from_static("/quarry.v1.AssistantService/Ask"),
            codec,
        )
        .await;
    let status = match result {
        Err(status) => status,
        Ok(response) => response.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .contains("AskRequest.conversation_id: invalid string value"),
        "{status:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_nested_filter_value_names_its_path() {
    let server = TestServer::start(Options {
        search: true,
        ..Default::default()
    })
    .await;
    let eq = |field: &str, text: &str| Filter {
        kind: Some(filter::Kind::Eq(FieldValue {
            field: field.to_string(),
            value: Some(Value {
                kind: Some(value::Kind::TextValue(text.to_string())),
            }),
        })),
    };
    let request = SearchRequest {
        collection: "artworks".to_string(),
        query: "sea".to_string(),
        filter: Some(Filter {
            kind: Some(filter::Kind::And(FilterList {
                filters: vec![eq("classification", "painting"), eq("artist", "Turner\0")],
            })),
        }),
        ..Default::default()
    };
    let status = server
        .search()
        .search(authed(request, &token("hostile-filter")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violation(&status).0,
        "filter.and.filters[1].eq.value.text_value"
    );
    server.stop().await;
}

/// tonic refuses a message over its decode limit (4 MiB by default; the
/// server sets none) before any codec runs, as `OUT_OF_RANGE`. This pins
/// what a client sees.
#[tokio::test]
async fn a_message_over_the_decode_limit_is_out_of_range() {
    let server = TestServer::start(Options::default()).await;
    let request = ask(&"a".repeat(5 * 1024 * 1024));
    let status = ask_all_as(&server, request, &token("hostile-size"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    server.stop().await;
}
