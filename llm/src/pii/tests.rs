use std::sync::{Arc, Mutex};

use futures::StreamExt;
use futures::stream::BoxStream;
use proptest::prelude::*;

use super::detect::{iban_valid, luhn_valid};
use super::*;
use crate::chat::{ChatEvent, ChatModel, ChatRequest, FinishReason, Message, ToolCall};
use crate::error::{LlmError, Result};

/// The values of `kind` the detectors find in `text`.
fn found(kind: PiiKind, text: &str) -> Vec<&str> {
    detect(text)
        .into_iter()
        .filter(|d| d.kind == kind)
        .map(|d| &text[d.range])
        .collect()
}

#[test]
fn email_detector_finds_addresses() {
    let text = "write alice@example.com or First.Last+tag@mail.sub.example.co.uk, \
                (bob_99%x@host-1.io).";
    assert_eq!(
        found(PiiKind::Email, text),
        [
            "alice@example.com",
            "First.Last+tag@mail.sub.example.co.uk",
            "bob_99%x@host-1.io"
        ]
    );
}

#[test]
fn email_detector_skips_what_is_not_an_address() {
    for text in [
        "user@localhost",
        "@example.com",
        "alice@",
        "alice@-bad.com",
        "a@b.c",
        "price 5 @ 10.50",
        "select * from t where a@>b",
    ] {
        assert_eq!(found(PiiKind::Email, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn phone_detector_finds_international_and_national_formats() {
    for phone in [
        "+49 151 12345678",
        "+4915112345678",
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "+49 (0)30 1234567",
        "(030) 1234567",
        "555-123-4567",
        "555.123.4567",
        "06 12 34 56 78",
        "0049 151 1234567",
        "1-800-555-0199",
        "030 1234567",
    ] {
        let text = format!("call {phone}, please");
        assert_eq!(found(PiiKind::Phone, &text), [phone], "{text}");
    }
}

#[test]
fn phone_detector_finds_a_phone_after_a_date() {
    assert_eq!(
        found(PiiKind::Phone, "on 2024-01-05 555-123-4567 called"),
        ["555-123-4567"]
    );
}

#[test]
fn phone_detector_skips_years_dates_decimals_amounts_and_ids() {
    for text in [
        "in 2024 we sold 42 units",
        "between 2023 2024 2025",
        "on 2024-01-05",
        "on 2024-01-05 10:30",
        "at 2024-01-05T10:30:00Z",
        "on 05.01.2024 and 5-1-2024",
        "rating 4.6999 of 5",
        "pi is 3.14159265",
        "revenue 1 234 567 EUR",
        "revenue 1 234 567.89 EUR",
        "€ 12 345 678",
        "order 1234567 and 123456789012",
        "order ORD-2024-0001 shipped",
        "host 192.168.100.200",
        "version 1.2.3.4.5.6.7",
        "Q1 2024 7.5%",
        "sku A12-345-6789",
    ] {
        assert_eq!(found(PiiKind::Phone, text), Vec::<&str>::new(), "{text}");
    }
}

#[test]
fn luhn_check_follows_iso_iec_7812() {
    assert!(luhn_valid("4111111111111111"));
    assert!(luhn_valid("79927398713"));
    assert!(!luhn_valid("4111111111111112"));
    assert!(!luhn_valid(""));
    assert!(!luhn_valid("4111x11111111111"));
}

#[test]
fn card_detector_requires_a_passing_luhn_check() {
    let text = "cards 4111 1111 1111 1111, 5500-0000-0000-0004, 378282246310005 \
                and 4111 1111 1111 1112, 1234567890123456";
    assert_eq!(
        found(PiiKind::Card, text),
        [
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "378282246310005"
        ]
    );
    // the 16-digit numbers failing Luhn are no phones either (no separators)
    // or are left whole
    assert!(!found(PiiKind::Phone, text).contains(&"1234567890123456"));
}

#[test]
fn card_detector_finds_a_card_among_other_digit_groups() {
    assert_eq!(
        found(PiiKind::Card, "ref 2024 4111 1111 1111 1111 2025"),
        ["4111 1111 1111 1111"]
    );
}

#[test]
fn card_detector_skips_too_short_and_too_long_numbers() {
    // Luhn-valid, but 12 and 20 digits
    assert!(luhn_valid("411111111117"));
    assert!(luhn_valid("41111111111111111115"));
    assert_eq!(
        found(PiiKind::Card, "411111111117 and 41111111111111111115"),
        Vec::<&str>::new()
    );
}

#[test]
fn iban_check_follows_iso_13616() {
    assert!(iban_valid("DE89370400440532013000"));
    assert!(iban_valid("GB82WEST12345698765432"));
    assert!(iban_valid("NO9386011117947"));
    assert!(!iban_valid("DE88370400440532013000"), "bad check digits");
    assert!(!iban_valid("DE89370400440532013001"), "bad bban");
    assert!(!iban_valid("de89370400440532013000"), "lower case");
    assert!(!iban_valid("DE89"), "too short");
}

#[test]
fn iban_detector_requires_mod_97() {
    let text = "pay DE89 3704 0044 0532 0130 00 or GB82WEST12345698765432, \
                not DE88 3704 0044 0532 0130 00";
    assert_eq!(
        found(PiiKind::Iban, text),
        ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"]
    );
    // the IBAN with bad check digits is no card or phone either
    assert_eq!(detect(text).len(), 2);
}

#[test]
fn iban_detector_stops_before_trailing_capitals() {
    assert_eq!(
        found(PiiKind::Iban, "FR14 2004 1010 0505 0001 3M02 606 IS MINE"),
        ["FR14 2004 1010 0505 0001 3M02 606"]
    );
}

#[test]
fn detect_returns_each_value_once_in_order() {
    let text = "a@b.io +49 151 12345678 DE89370400440532013000 4111111111111111";
    let kinds: Vec<PiiKind> = detect(text).into_iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [PiiKind::Email, PiiKind::Phone, PiiKind::Iban, PiiKind::Card]
    );
}

#[test]
fn same_value_same_placeholder_different_values_different_numbers() {
    let pii = Pseudonymizer::new();
    let first = pii.redact("alice@example.com and bob@example.com and alice@example.com");
    assert_eq!(first, "<EMAIL_1> and <EMAIL_2> and <EMAIL_1>");
    assert_eq!(pii.redact("+49 151 12345678"), "<PHONE_3>");
    assert_eq!(pii.redact("bob@example.com"), "<EMAIL_2>");
    assert_eq!(pii.redact_value("name", "Ada"), "<NAME_4>");
    assert_eq!(pii.redact_value("other", "Ada"), "<NAME_4>");
    assert_eq!(pii.value_count(), 4);
}

#[test]
fn redact_then_restore_round_trips() {
    let pii = Pseudonymizer::new();
    let text = "Ada (ada@example.com, +44 20 7946 0958) paid 4111 1111 1111 1111 \
                from GB82 WEST 1234 5698 7654 32.";
    let name = pii.redact_value("customer name", "Ada");
    let redacted = pii.redact(&format!("{name}: {text}"));
    for secret in [
        "ada@example.com",
        "+44 20 7946 0958",
        "4111 1111 1111 1111",
        "GB82 WEST 1234 5698 7654 32",
    ] {
        assert!(!redacted.contains(secret), "{secret} in {redacted}");
    }
    // `Ada` is 3 characters: searched as a whole word, so `(ada@` stays an e-mail
    assert_eq!(
        redacted,
        "<CUSTOMER_NAME_1>: <CUSTOMER_NAME_1> (<EMAIL_4>, <PHONE_5>) paid <CARD_3> from <IBAN_2>."
    );
    assert_eq!(pii.restore(&redacted), format!("Ada: {text}"));
}

#[test]
fn redact_is_idempotent() {
    let pii = Pseudonymizer::new();
    pii.redact_value("name", "Grace Hopper");
    let once = pii.redact("Grace Hopper <grace@navy.mil> typed <EMAIL_7>");
    assert_eq!(pii.redact(&once), once);
    assert_eq!(pii.redact_value("name", "<NAME_1>"), "<NAME_1>");
}

#[test]
fn tagged_values_are_replaced_wherever_they_appear_later() {
    let pii = Pseudonymizer::new();
    assert_eq!(pii.redact_value("name", "Grace Hopper"), "<NAME_1>");
    assert_eq!(pii.redact_value("city", "Oslo"), "<CITY_2>");
    assert_eq!(pii.redact_value("note", "say \"hi\""), "<NOTE_3>");
    assert_eq!(
        pii.redact("Grace Hopper lives in Oslo; Oslogate and GraceHopper are not her"),
        "<NAME_1> lives in <CITY_2>; Oslogate and GraceHopper are not her"
    );
    // as it appears in JSON text (a tool result)
    assert_eq!(
        pii.redact(r#"{"note":"say \"hi\"","who":"Grace Hopper"}"#),
        r#"{"note":"<NOTE_3>","who":"<NAME_1>"}"#
    );
}

#[test]
fn short_and_blank_values_are_not_searched_in_free_text() {
    let pii = Pseudonymizer::new();
    assert_eq!(pii.redact_value("initials", "Al"), "<INITIALS_1>");
    assert_eq!(pii.redact_value("name", "  "), "  ");
    assert_eq!(pii.redact("Al and Alan"), "Al and Alan");
}

#[test]
fn forged_placeholder_does_not_reveal_another_value() {
    let pii = Pseudonymizer::new();
    // the user types placeholders before any value is known, guessing the
    // numbers real values will get
    let typed = "what is <EMAIL_3>? and <PII_5>?";
    let question = pii.redact(typed);
    assert_eq!(question, "what is <LITERAL_1>? and <LITERAL_2>?");
    // rows arrive; the numbers typed are never issued for real values
    let row = pii.redact("alice@example.com");
    assert_eq!(row, "<EMAIL_4>");
    let cell = pii.redact_value("pii", "secret");
    assert_eq!(cell, "<PII_6>");
    // the next turn sends the question again: same literal placeholders
    assert_eq!(pii.redact(typed), question);
    // the model echoes them: the user gets back what they typed
    assert_eq!(pii.restore(&question), typed);
    assert_eq!(
        pii.restore(&format!("{row} {cell}")),
        "alice@example.com secret"
    );
}

#[test]
fn placeholder_typed_after_a_literal_of_the_same_call_stays_literal() {
    let pii = Pseudonymizer::new();
    let typed = "<EMAIL_9> <LITERAL_1> <LITERAL_2>";
    let redacted = pii.redact(typed);
    assert_eq!(redacted, "<LITERAL_3> <LITERAL_4> <LITERAL_5>");
    assert_eq!(pii.restore(&redacted), typed);
}

#[test]
fn invented_placeholders_stay_as_they_are() {
    let pii = Pseudonymizer::new();
    let email = pii.redact("alice@example.com");
    assert_eq!(
        pii.restore(&format!("{email} <EMAIL_9> <PHONE_1> <email_1>")),
        "alice@example.com <EMAIL_9> <PHONE_1> <email_1>"
    );
}

#[test]
fn tags_become_labels_of_capitals_digits_and_underscores() {
    assert_eq!(label_of("name"), "NAME");
    assert_eq!(label_of(" e-mail 2 "), "E_MAIL_2");
    assert_eq!(label_of("Straße"), "STRA_E");
    assert_eq!(label_of(""), PII_LABEL);
    assert_eq!(label_of("x".repeat(100).as_str()).len(), MAX_LABEL_CHARS);
}

#[test]
fn a_tag_cannot_forge_a_delimiter() {
    let pii = Pseudonymizer::new();
    let email = pii.redact("alice@example.com");
    assert_eq!(email, "<EMAIL_1>");
    let placeholder = pii.redact_value("x><EMAIL_1", "mallory");
    assert_eq!(placeholder, "<X__EMAIL_1_2>");
    assert_eq!(pii.restore(&placeholder), "mallory");
    assert_eq!(pii.restore(&email), "alice@example.com");
    let placeholder = pii.redact_value("<>", "eve");
    assert_eq!(placeholder, "<___3>");
    assert_eq!(pii.restore(&placeholder), "eve");
}

#[test]
fn restore_json_escapes_values() {
    let pii = Pseudonymizer::new();
    let name = pii.redact_value("name", r#"O"Brien \ Co"#);
    let restored = pii.restore_json(&format!(r#"{{"name":"{name}"}}"#));
    let parsed: serde_json::Value = serde_json::from_str(&restored).unwrap();
    assert_eq!(parsed["name"], r#"O"Brien \ Co"#);
}

/// A pseudonymizer with a few values and a text naming them, invented
/// placeholders and stray `<`.
fn restore_fixture() -> (Arc<Pseudonymizer>, String) {
    let pii = Arc::new(Pseudonymizer::new());
    let text = pii.redact(
        "mail alice@example.com < call +49 151 12345678 <b> or <EMAIL_77> \
         about DE89370400440532013000 <",
    );
    (pii, text)
}

fn streamed(pii: &Arc<Pseudonymizer>, deltas: &[&str]) -> String {
    let mut restorer = pii.stream_restorer();
    let mut out: String = deltas.iter().map(|d| restorer.push(d)).collect();
    out.push_str(&restorer.finish());
    out
}

#[test]
fn stream_restorer_restores_placeholders_split_at_every_position() {
    let (pii, text) = restore_fixture();
    let expected = pii.restore(&text);
    assert!(expected.contains("alice@example.com") && expected.contains("<EMAIL_77>"));
    assert!(text.contains("<LITERAL_"));
    let cuts: Vec<usize> = (0..=text.len()).collect();
    for &a in &cuts {
        assert_eq!(
            streamed(&pii, &[&text[..a], &text[a..]]),
            expected,
            "cut {a}"
        );
        for &b in &cuts[a..] {
            assert_eq!(
                streamed(&pii, &[&text[..a], &text[a..b], &text[b..]]),
                expected,
                "cuts {a} {b}"
            );
        }
    }
}

#[test]
fn stream_restorer_holds_back_only_a_possible_placeholder_start() {
    let pii = Arc::new(Pseudonymizer::new());
    assert_eq!(pii.redact("alice@example.com"), "<EMAIL_1>");
    assert_eq!(pii.longest_placeholder(), "<EMAIL_1>".len());
    let mut restorer = pii.stream_restorer();
    assert_eq!(restorer.push("Hi <EMAIL"), "Hi ");
    assert_eq!(restorer.push("_1"), "");
    assert_eq!(restorer.push("> and <em"), "alice@example.com and <em");
    // as long as the longest placeholder: cannot be one
    assert_eq!(restorer.push(" <ABCDEFGH"), " <ABCDEFGH");
    assert_eq!(restorer.push(" 2 < 3"), " 2 < 3");
    assert_eq!(restorer.push(" <"), " ");
    assert_eq!(restorer.finish(), "<");
    // nothing issued: nothing held
    let empty = Arc::new(Pseudonymizer::new());
    assert_eq!(empty.stream_restorer().push("a <EMAIL_"), "a <EMAIL_");
}

proptest! {
    #[test]
    fn stream_restorer_equals_restore_for_any_text_and_cuts(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("<EMAIL_1>".to_owned()),
                Just("<PHONE_2>".to_owned()),
                Just("<NAME_3>".to_owned()),
                Just("<NAME_99>".to_owned()),
                Just("<".to_owned()),
                Just(">".to_owned()),
                "[a-zA-Z0-9_ <>é]{0,6}",
            ],
            0..12,
        ),
        cuts in proptest::collection::vec(0usize..200, 0..4),
    ) {
        let pii = Arc::new(Pseudonymizer::new());
        pii.redact("alice@example.com +49 151 12345678");
        pii.redact_value("name", "Ada");
        let text = parts.concat();
        let mut bounds: Vec<usize> = cuts
            .into_iter()
            .map(|c| c % (text.len() + 1))
            .filter(|&c| text.is_char_boundary(c))
            .collect();
        bounds.sort_unstable();
        let mut deltas = Vec::new();
        let mut at = 0;
        for bound in bounds {
            deltas.push(&text[at..bound]);
            at = bound;
        }
        deltas.push(&text[at..]);
        prop_assert_eq!(streamed(&pii, &deltas), pii.restore(&text));
    }

    #[test]
    fn a_seeded_pseudonymizer_redacts_and_restores_as_the_one_it_was_seeded_from(
        text in "\\PC{0,60}|[a-z ]{0,10}(alice@example.com|<EMAIL_1>|<NAME_2>|Ada)[a-z <>]{0,10}",
    ) {
        let earlier = Pseudonymizer::new();
        earlier.redact_value("name", "Ada");
        earlier.redact(&text);
        let later = Pseudonymizer::new();
        for known in earlier.known() {
            later.seed(&known.placeholder, &known.value);
        }
        prop_assert_eq!(later.known(), earlier.known());
        let redacted = later.redact(&text);
        prop_assert_eq!(&redacted, &earlier.redact(&text));
        prop_assert_eq!(later.restore(&redacted), text);
    }

    #[test]
    fn restore_inverts_redact_even_when_redacted_twice(text in "\\PC{0,80}") {
        let pii = Pseudonymizer::new();
        let redacted = pii.redact(&text);
        prop_assert_eq!(pii.restore(&redacted), text.clone());
        let twice = pii.redact(&redacted);
        prop_assert_eq!(pii.restore(&twice), text);
    }
}

#[test]
fn known_lists_values_in_issue_order_and_never_debug_prints_them() {
    let pii = Pseudonymizer::new();
    pii.redact_value("name", "Ada Lovelace");
    pii.redact("mail ada@example.com, not <EMAIL_9>");
    let known = pii.known();
    let listed: Vec<(&str, &str)> = known
        .iter()
        .map(|k| (k.placeholder.as_str(), k.value.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            ("<NAME_1>", "Ada Lovelace"),
            ("<LITERAL_2>", "<EMAIL_9>"),
            ("<EMAIL_3>", "ada@example.com"),
        ]
    );
    assert!(!format!("{known:?}").contains("Ada"), "{known:?}");
    assert_eq!(
        serde_json::to_string(&known[0]).unwrap(),
        r#"{"placeholder":"<NAME_1>","value":"Ada Lovelace"}"#
    );
}

#[test]
fn seeded_values_keep_their_placeholders_and_are_found_again() {
    let pii = Pseudonymizer::new();
    assert_eq!(pii.seed("<NAME_4>", "Ada Lovelace"), "<NAME_4>");
    assert_eq!(pii.seed("<EMAIL_2>", "ada@example.com"), "<EMAIL_2>");
    // earlier text, in clear or already with the placeholders
    assert_eq!(
        pii.redact("Ada Lovelace (ada@example.com), i.e. <NAME_4>"),
        "<NAME_4> (<EMAIL_2>), i.e. <NAME_4>"
    );
    // the same value in this request's rows: the same placeholder
    assert_eq!(pii.redact_value("name", "Ada Lovelace"), "<NAME_4>");
    // new values are numbered after every seeded one
    assert_eq!(pii.redact_value("name", "Mary Somerville"), "<NAME_5>");
    assert_eq!(
        pii.restore("<NAME_4>, <EMAIL_2>, <NAME_5>"),
        "Ada Lovelace, ada@example.com, Mary Somerville"
    );
}

#[test]
fn a_seed_that_cannot_keep_its_placeholder_gets_a_new_one() {
    let pii = Pseudonymizer::new();
    assert_eq!(pii.seed("<NAME_1>", "Ada Lovelace"), "<NAME_1>");
    // taken by another value (two turns that numbered independently)
    assert_eq!(pii.seed("<NAME_1>", "Mary Somerville"), "<NAME_2>");
    // a value already known keeps its placeholder
    assert_eq!(pii.seed("<NAME_7>", "Ada Lovelace"), "<NAME_1>");
    // not a placeholder this module could issue: a fresh one
    assert_eq!(pii.seed("NAME_1", "Charles Babbage"), "<PII_3>");
    assert_eq!(pii.seed("<name_1>", "Ada Byron"), "<PII_4>");
    assert_eq!(
        pii.seed("<NAME_99999999999999999999999>", "Lord Byron"),
        "<PII_5>"
    );
    // nothing to hide, or a placeholder issued here: not seeded
    assert_eq!(pii.seed("<NAME_6>", "  "), "  ");
    assert_eq!(pii.seed("<NAME_6>", "<NAME_1>"), "<NAME_1>");
    assert_eq!(pii.value_count(), 5);
    assert_eq!(
        pii.restore("<NAME_2> <PII_3>"),
        "Mary Somerville Charles Babbage"
    );
}

#[test]
fn a_seed_whose_placeholder_was_typed_as_a_literal_is_renumbered() {
    let pii = Pseudonymizer::new();
    // the earlier request saw `<EMAIL_1>` typed, and stored it as a literal
    assert_eq!(pii.seed("<LITERAL_1>", "<EMAIL_1>"), "<LITERAL_1>");
    // a conflicting seed cannot make the typed text reveal a value
    assert_eq!(pii.seed("<EMAIL_1>", "ada@example.com"), "<EMAIL_2>");
    assert_eq!(pii.redact("typed <EMAIL_1>"), "typed <LITERAL_1>");
    assert_eq!(
        pii.restore("<LITERAL_1> <EMAIL_2>"),
        "<EMAIL_1> ada@example.com"
    );
}

/// A model that records its requests and plays fixed events.
struct Recorder {
    requests: Mutex<Vec<ChatRequest>>,
    events: Vec<Result<ChatEvent>>,
}

impl ChatModel for Recorder {
    fn chat_stream(&self, request: ChatRequest) -> BoxStream<'static, Result<ChatEvent>> {
        self.requests.lock().unwrap().push(request);
        futures::stream::iter(self.events.clone()).boxed()
    }

    fn name(&self) -> &str {
        "recorder"
    }
}

fn recorder(events: Vec<Result<ChatEvent>>) -> Arc<Recorder> {
    Arc::new(Recorder {
        requests: Mutex::new(Vec::new()),
        events,
    })
}

fn delta(text: &str) -> Result<ChatEvent> {
    Ok(ChatEvent::ContentDelta(text.to_owned()))
}

fn finished() -> Result<ChatEvent> {
    Ok(ChatEvent::Finished {
        finish_reason: FinishReason::Stop,
    })
}

async fn run(model: &Redacting, request: ChatRequest) -> Vec<Result<ChatEvent>> {
    model.chat_stream(request).collect().await
}

fn conversation() -> ChatRequest {
    ChatRequest::new(
        vec![
            Message::system("operator: ops@corp.example"),
            Message::user("orders of alice@example.com?"),
            Message::Assistant {
                content: Some("Looking up +49 151 12345678".into()),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "run_sql".into(),
                    arguments: r#"{"sql":"select * from o where card = '4111111111111111'"}"#
                        .into(),
                }],
            },
            Message::tool("call_1", r#"[{"iban":"DE89370400440532013000"}]"#),
        ],
        vec![],
    )
}

#[tokio::test]
async fn redacting_sends_no_pii_in_any_message() {
    let inner = recorder(vec![finished()]);
    let pii = Arc::new(Pseudonymizer::new());
    let model = Redacting::new(inner.clone(), pii.clone(), Reveal::Originals);
    assert_eq!(model.name(), "recorder");
    run(&model, conversation()).await;
    let sent = serde_json::to_string(&inner.requests.lock().unwrap()[0]).unwrap();
    for secret in [
        "ops@corp.example",
        "alice@example.com",
        "+49 151 12345678",
        "4111111111111111",
        "DE89370400440532013000",
    ] {
        assert!(!sent.contains(secret), "{secret} sent: {sent}");
    }
    assert!(
        sent.contains("<CARD_4>") && sent.contains("<IBAN_5>"),
        "{sent}"
    );
    assert_eq!(pii.value_count(), 5);
}

#[tokio::test]
async fn redacting_restores_text_split_across_deltas_and_tool_arguments() {
    let pii = Arc::new(Pseudonymizer::new());
    pii.redact("alice@example.com");
    let inner = recorder(vec![
        delta("Mail <EMA"),
        delta("IL_1"),
        delta(">, not <EMAIL_2"),
        Ok(ChatEvent::ToolCall(ToolCall {
            id: "c".into(),
            name: "find".into(),
            arguments: r#"{"email":"<EMAIL_1>"}"#.into(),
        })),
        finished(),
    ]);
    let model = Redacting::new(inner, pii, Reveal::Originals);
    let events: Vec<ChatEvent> = run(&model, ChatRequest::default())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events,
        [
            ChatEvent::ContentDelta("Mail ".into()),
            ChatEvent::ContentDelta("alice@example.com, not ".into()),
            ChatEvent::ContentDelta("<EMAIL_2".into()),
            ChatEvent::ToolCall(ToolCall {
                id: "c".into(),
                name: "find".into(),
                arguments: r#"{"email":"alice@example.com"}"#.into(),
            }),
            ChatEvent::Finished {
                finish_reason: FinishReason::Stop
            },
        ]
    );
}

#[tokio::test]
async fn redacting_releases_held_text_before_an_error_and_at_the_end() {
    let pii = Arc::new(Pseudonymizer::new());
    pii.redact("alice@example.com");
    let failing = recorder(vec![
        delta("a <EMAIL_1"),
        Err(LlmError::Transport("reset".into())),
    ]);
    let model = Redacting::new(failing, pii.clone(), Reveal::Originals);
    let events = run(&model, ChatRequest::default()).await;
    assert_eq!(
        events,
        [
            delta("a "),
            delta("<EMAIL_1"),
            Err(LlmError::Transport("reset".into()))
        ]
    );
    let cut_short = recorder(vec![delta("b <EMAIL_1")]);
    let model = Redacting::new(cut_short, pii, Reveal::Originals);
    let events = run(&model, ChatRequest::default()).await;
    assert_eq!(events, [delta("b "), delta("<EMAIL_1")]);
}

#[tokio::test]
async fn redacting_without_reveal_keeps_placeholders() {
    let pii = Arc::new(Pseudonymizer::new());
    let inner = recorder(vec![
        delta("Mail <EMAIL_1>"),
        Ok(ChatEvent::ToolCall(ToolCall {
            id: "c".into(),
            name: "find".into(),
            arguments: r#"{"email":"<EMAIL_1>"}"#.into(),
        })),
        finished(),
    ]);
    let model = Redacting::new(inner.clone(), pii, Reveal::Placeholders);
    let answer = crate::chat::collect(model.chat_stream(ChatRequest::new(
        vec![Message::user("alice@example.com")],
        vec![],
    )))
    .await
    .unwrap();
    assert_eq!(answer.content, "Mail <EMAIL_1>");
    assert_eq!(answer.tool_calls[0].arguments, r#"{"email":"<EMAIL_1>"}"#);
    let sent = &inner.requests.lock().unwrap()[0];
    assert_eq!(sent.messages, [Message::user("<EMAIL_1>")]);
}

/// A long text with no value any detector takes, naming `name`.
fn long_clean_text(name: &str) -> String {
    let mut text = format!("Known collectors include {name}. ");
    while text.len() < 2 * CLEAN_TEXT_MIN_BYTES {
        text.push_str("Tables: artworks(id, title, year), artists(id, name, gender). ");
    }
    text
}

#[test]
fn a_text_remembered_as_clean_still_hides_the_values_this_request_has_seen() {
    let text = long_clean_text("Grace Hopper");
    let first = Pseudonymizer::new();
    assert_eq!(first.redact(&text), text, "nothing to hide yet");
    assert_eq!(first.redact(&text), text, "remembered as clean");
    // another request that has seen the name as a PII cell: the same text,
    // remembered as clean, must still have the name replaced
    let second = Pseudonymizer::new();
    assert_eq!(second.redact_value("name", "Grace Hopper"), "<NAME_1>");
    let redacted = second.redact(&text);
    assert!(!redacted.contains("Grace Hopper"), "{redacted}");
    assert!(redacted.contains("<NAME_1>"), "{redacted}");
    // and placeholder-shaped text in it is still taken as a literal
    let shaped = format!("{text} <NAME_1>");
    let third = Pseudonymizer::new();
    assert_eq!(third.redact(&shaped), format!("{text} <LITERAL_1>"));
}

#[test]
fn a_long_text_with_a_detected_value_is_never_remembered_as_clean() {
    let text = format!("{} Write to ada@example.com.", long_clean_text("Ada"));
    for _ in 0..2 {
        let pii = Pseudonymizer::new();
        let redacted = pii.redact(&text);
        assert!(!redacted.contains("ada@example.com"), "{redacted}");
        assert!(redacted.contains("<EMAIL_1>"), "{redacted}");
    }
}
