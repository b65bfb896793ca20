#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: failing loudly is the point

use std::{cell::Cell, collections::BTreeMap, time::Instant};

use tonic::Code;
use tonic_types::StatusExt as _;

use super::*;
use crate::v1::{
    AskMode, AskRequest, FieldValue, Filter, FilterList, GetSummariesRequest,
    ListConversationsResponse, SearchRequest, SearchResponse, Value as ProtoValue, filter, value,
};

thread_local! {
    static WALKS: Cell<usize> = const { Cell::new(0) };
}

/// Counts the reflective walks on this thread (the slow path).
pub(super) fn count_walk() {
    WALKS.with(|walks| walks.set(walks.get() + 1));
}

fn walks() -> usize {
    WALKS.with(Cell::get)
}

fn ask(question: &str) -> AskRequest {
    AskRequest {
        question: question.to_string(),
        conversation_id: "0b6a4f5e-6f7b-4c1a-9d51-2d0e7c3a9b10".to_string(),
        mode: AskMode::Agentic as i32,
        preview_rows: 20,
    }
}

fn text(value: &str) -> ProtoValue {
    ProtoValue {
        kind: Some(value::Kind::TextValue(value.to_string())),
    }
}

fn eq(field: &str, value: ProtoValue) -> Filter {
    Filter {
        kind: Some(filter::Kind::Eq(FieldValue {
            field: field.to_string(),
            value: Some(value),
        })),
    }
}

/// The one field violation of a `BadRequest` status.
fn violation(status: &Status) -> (String, String) {
    let details = status.get_error_details();
    let violations = &details
        .bad_request()
        .expect("a BadRequest")
        .field_violations;
    assert_eq!(violations.len(), 1, "{violations:?}");
    (
        violations[0].field.clone(),
        violations[0].description.clone(),
    )
}

#[test]
fn the_descriptor_set_knows_every_request_and_no_request_is_a_response() {
    let reflection = reflection().unwrap();
    let pool = &reflection.pool;
    let mut outputs = HashSet::new();
    for service in pool.services() {
        for method in service.methods() {
            outputs.insert(method.output().full_name().to_owned());
        }
    }
    assert!(reflection.is_request(&AskRequest::full_name()));
    assert!(reflection.is_request(&SearchRequest::full_name()));
    assert!(!reflection.is_request(&SearchResponse::full_name()));
    assert!(reflection.requests.len() > 10, "{:?}", reflection.requests);
    assert!(reflection.requests.is_disjoint(&outputs));
}

#[test]
fn invalid_utf8_in_a_request_string_is_invalid_argument_naming_it() {
    let mut bytes = ask("x").encode_to_vec();
    // field 1 (question), length 1, then 0xff: not UTF-8
    let at = bytes.iter().position(|b| *b == b'x').unwrap();
    bytes[at] = 0xff;
    let status = decode_checked::<AskRequest>(&bytes).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("invalid request: failed to decode Protobuf message"),
        "{status:?}"
    );
    assert!(
        status.message().contains("AskRequest.question"),
        "{status:?}"
    );
}

#[test]
fn a_truncated_request_is_invalid_argument() {
    let bytes = ask("how many artworks are there?").encode_to_vec();
    let status = decode_checked::<AskRequest>(&bytes[..bytes.len() / 2]).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("AskRequest"), "{status:?}");
}

#[test]
fn a_response_that_does_not_decode_stays_internal() {
    // A client reading a broken response did nothing wrong.
    let status = decode_checked::<SearchResponse>(&[0x0a, 0x05, 0x01]).unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
}

#[test]
fn a_nul_in_a_top_level_string_names_the_field() {
    let bytes = ask("how many\0 artworks?").encode_to_vec();
    let status = decode_checked::<AskRequest>(&bytes).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "invalid question: must not contain a NUL character (U+0000)"
    );
    assert_eq!(
        violation(&status),
        ("question".to_string(), NUL_DESCRIPTION.to_string())
    );
}

#[test]
fn a_nul_in_a_nested_repeated_oneof_string_names_the_path() {
    let request = SearchRequest {
        collection: "artworks".to_string(),
        query: "sunset".to_string(),
        filter: Some(Filter {
            kind: Some(filter::Kind::And(FilterList {
                filters: vec![eq("artist", text("Turner")), eq("medium", text("oil\0"))],
            })),
        }),
        ..Default::default()
    };
    let status = decode_checked::<SearchRequest>(&request.encode_to_vec()).unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        violation(&status).0,
        "filter.and.filters[1].eq.value.text_value"
    );

    let request = SearchRequest {
        collection: "artworks".to_string(),
        fields: vec!["title".to_string(), "url".to_string(), "\0".to_string()],
        ..Default::default()
    };
    let status = decode_checked::<SearchRequest>(&request.encode_to_vec()).unwrap_err();
    assert_eq!(violation(&status).0, "fields[2]");
}

#[test]
fn a_nul_in_a_map_key_or_value_names_the_entry() {
    // google.protobuf.Struct is a map<string, Value>; build a request-shaped
    // walk over one directly.
    let descriptor = reflection()
        .unwrap()
        .pool
        .get_message_by_name("google.protobuf.Struct")
        .unwrap();
    let structure = prost_types::Struct {
        fields: BTreeMap::from([
            (
                "b".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("x\0".to_string())),
                },
            ),
            ("a".to_string(), prost_types::Value { kind: None }),
        ]),
    };
    let message = DynamicMessage::decode(descriptor.clone(), &*structure.encode_to_vec()).unwrap();
    assert_eq!(
        nul_in_message(&message, "").as_deref(),
        Some(r#"fields["b"].string_value"#)
    );
    let structure = prost_types::Struct {
        fields: BTreeMap::from([("k\0".to_string(), prost_types::Value { kind: None })]),
    };
    let message = DynamicMessage::decode(descriptor, &*structure.encode_to_vec()).unwrap();
    assert_eq!(
        nul_in_message(&message, "").as_deref(),
        Some(r#"fields["k\0"]"#)
    );
}

#[test]
fn a_message_with_zero_bytes_but_no_nul_decodes_after_the_walk() {
    // An empty string in a repeated field is a zero length byte, and an
    // empty message is a zero length too: the slow path runs and finds no NUL.
    let request = SearchRequest {
        collection: "artworks".to_string(),
        fields: vec![String::new(), "title".to_string()],
        filter: Some(Filter { kind: None }),
        ..Default::default()
    };
    let bytes = request.encode_to_vec();
    assert!(bytes.contains(&0));
    let before = walks();
    assert_eq!(decode_checked::<SearchRequest>(&bytes).unwrap(), request);
    assert_eq!(walks(), before + 1);

    let request = GetSummariesRequest::default();
    assert_eq!(
        decode_checked::<GetSummariesRequest>(&request.encode_to_vec()).unwrap(),
        request
    );
}

#[test]
fn a_request_without_a_zero_byte_takes_the_fast_path() {
    let request = ask("Which artists have the most works acquired after 2000?");
    let bytes = request.encode_to_vec();
    assert!(!bytes.contains(&0));
    let before = walks();
    assert_eq!(decode_checked::<AskRequest>(&bytes).unwrap(), request);
    assert_eq!(walks(), before, "no reflective walk");
}

#[test]
fn a_response_holding_nul_is_not_refused() {
    let response = ListConversationsResponse {
        next_page_token: "a\0b".to_string(),
        ..Default::default()
    };
    assert_eq!(
        decode_checked::<ListConversationsResponse>(&response.encode_to_vec()).unwrap(),
        response
    );
}

/// What the check costs on a typical `AskRequest`: printed, not asserted
/// (`cargo nextest run -p quarry-proto --no-capture decode_cost`).
#[test]
fn decode_cost() {
    const N: u32 = 20_000;
    let plain = ask("Which artists have the most works acquired after 2000?").encode_to_vec();
    // The slow path: a request with a 0x00 byte (an empty repeated string).
    let zero = SearchRequest {
        collection: "artworks".to_string(),
        query: "Which artists have the most works acquired after 2000?".to_string(),
        fields: vec![String::new()],
        ..Default::default()
    }
    .encode_to_vec();
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..N {
            f();
        }
        start.elapsed() / N
    };
    let prost_only = time(&|| {
        std::hint::black_box(AskRequest::decode(&*plain).unwrap());
    });
    let checked = time(&|| {
        std::hint::black_box(decode_checked::<AskRequest>(&plain).unwrap());
    });
    let search_prost = time(&|| {
        std::hint::black_box(SearchRequest::decode(&*zero).unwrap());
    });
    let search_walked = time(&|| {
        std::hint::black_box(decode_checked::<SearchRequest>(&zero).unwrap());
    });
    println!(
        "AskRequest ({} bytes): prost {prost_only:?}, checked {checked:?}; \
         SearchRequest with a 0x00 byte ({} bytes): prost {search_prost:?}, checked (walked) {search_walked:?}",
        plain.len(),
        zero.len()
    );
}
