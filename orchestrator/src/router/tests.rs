use super::*;

const ALL: Available = Available {
    summaries: true,
    search: true,
};

fn pipelines(route: &Route) -> Vec<Pipeline> {
    route.steps.iter().map(|s| s.pipeline).collect()
}

#[test]
fn trend_questions_go_to_summaries_with_the_cues_named() {
    let route = classify(
        "How has the share of works by women changed since 1950?",
        ALL,
    );
    assert_eq!(route.name(), "summaries");
    let step = route.step(Pipeline::Summaries).unwrap();
    assert_eq!(step.query, "share women 1950");
    assert_eq!(step.entity, None, "“How” is not a name");
    for cue in [
        "“how has”",
        "“changed”",
        "“since 1950”",
        "“share of” with a time cue",
    ] {
        assert!(route.reason.contains(cue), "{cue} in {}", route.reason);
    }
    assert!(route.reason.ends_with("→ summaries"), "{}", route.reason);

    for question in [
        "What did the gallery acquire of William Blake?",
        "Acquisitions decade by decade",
        "Is the number of prints acquired growing? Has it declined?",
        "the history of the Pre-Raphaelite Brotherhood at the Tate",
        "acquisitions over time",
        "What was the trend in purchases",
    ] {
        let route = classify(question, ALL);
        assert_eq!(route.name(), "summaries", "{question}: {}", route.reason);
    }
    let route = classify("What did the gallery acquire of William Blake?", ALL);
    let step = route.step(Pipeline::Summaries).unwrap();
    assert_eq!(step.entity.as_deref(), Some("William Blake"));
    assert_eq!(step.query, "william blake", "“gallery” is a filler");
    assert!(
        route.reason.contains("“what did the gallery acquire”"),
        "{}",
        route.reason
    );
    let route = classify(
        "the history of the Pre-Raphaelite Brotherhood at the Tate",
        ALL,
    );
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().entity.as_deref(),
        Some("Pre-Raphaelite Brotherhood")
    );
}

#[test]
fn a_share_needs_a_time_cue_to_be_a_trend() {
    let route = classify(
        "What share of acquisitions in the 1980s were by women?",
        ALL,
    );
    assert_eq!(route.name(), "summaries", "{}", route.reason);
    assert_eq!(
        route.reason,
        "share cue “share of” with a time cue → summaries"
    );
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().query,
        "share acquisitions 1980s women"
    );
    // no time cue: a plain question, searched as the fallback
    let route = classify("What share of works are prints?", ALL);
    assert_eq!(route.name(), "search", "{}", route.reason);
    assert!(
        route.reason.starts_with("no trend or descriptive cue"),
        "{}",
        route.reason
    );
}

#[test]
fn descriptive_questions_go_to_search_with_cue_words_stripped() {
    let route = classify("Show me works whose credit line mentions a bequest", ALL);
    assert_eq!(route.name(), "search");
    assert_eq!(route.step(Pipeline::Search).unwrap().query, "bequest");
    assert!(
        route.reason.contains("“credit line mentions”"),
        "{}",
        route.reason
    );
    assert!(route.reason.contains("“show me”"), "{}", route.reason);
    assert!(
        !route.reason.contains("“mentions”"),
        "a cue inside a wider one is not named twice: {}",
        route.reason
    );
    for (question, query) in [
        ("works depicting storms at sea", "storms sea"),
        ("Find watercolours of Venice", "watercolours venice"),
        ("Which drawings show a horse?", "drawings horse"),
        ("paintings that look like a dream", "paintings dream"),
        ("prints featuring a lighthouse", "prints lighthouse"),
        ("anything about shipwrecks", "shipwrecks"),
    ] {
        let route = classify(question, ALL);
        assert_eq!(route.name(), "search", "{question}: {}", route.reason);
        assert_eq!(route.steps[0].query, query, "{question}");
    }
}

#[test]
fn a_compound_question_gets_both_pipelines_each_with_its_part() {
    let route = classify(
        "Turner's acquisition history, and any works whose credit line mentions a bequest?",
        ALL,
    );
    assert_eq!(route.name(), "summaries+search");
    assert_eq!(pipelines(&route), [Pipeline::Summaries, Pipeline::Search]);
    let summaries = route.step(Pipeline::Summaries).unwrap();
    assert_eq!(summaries.entity.as_deref(), Some("Turner"));
    assert_eq!(summaries.query, "turner");
    assert_eq!(route.step(Pipeline::Search).unwrap().query, "bequest");
    assert_eq!(
        route.reason,
        "trend cue “acquisition history” → summaries; descriptive cues “whose credit line”, \
         “credit line mentions” → search"
    );
    // "depictions" is not "depicting"
    let route = classify("how have depictions of the sea changed", ALL);
    assert_eq!(route.name(), "summaries", "{}", route.reason);
    // one clause with both kinds of cue: both pipelines, same words
    let route = classify("How has Tate collected works depicting the sea?", ALL);
    assert_eq!(route.name(), "summaries+search", "{}", route.reason);
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().entity.as_deref(),
        Some("Tate")
    );
}

#[test]
fn a_clause_without_cues_belongs_to_every_pipeline() {
    let route = classify(
        "Women artists: how has their share changed, and show me their prints",
        ALL,
    );
    assert_eq!(route.name(), "summaries+search", "{}", route.reason);
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().query,
        "women artists share"
    );
    assert_eq!(
        route.step(Pipeline::Search).unwrap().query,
        "women artists prints"
    );
}

#[test]
fn small_talk_and_empty_questions_go_nowhere() {
    for question in ["hello", "hello there", "Hi, thanks!", "   ", "?"] {
        let route = classify(question, ALL);
        assert_eq!(route.name(), "none", "{question:?}");
        assert!(route.steps.is_empty());
        assert_eq!(
            route.reason,
            "no trend or descriptive cue, and no words to look up"
        );
        assert!(route.unavailable.is_empty());
    }
    // a cue with nothing to look for
    let route = classify("show me", ALL);
    assert_eq!(route.name(), "none");
    assert_eq!(
        route.reason,
        "descriptive cue “show me”, but nothing to search for"
    );
    let route = classify("How has it changed?", ALL);
    assert_eq!(route.name(), "none");
    assert!(
        route
            .reason
            .ends_with("but nothing to look up in summaries"),
        "{}",
        route.reason
    );
}

#[test]
fn content_words_without_cues_are_searched() {
    let route = classify("Which painting would my grandmother like best?", ALL);
    assert_eq!(route.name(), "search");
    assert_eq!(route.steps[0].query, "painting grandmother like best");
    assert_eq!(
        route.reason,
        "no trend or descriptive cue → search for the question's words"
    );
}

#[test]
fn availability_is_respected() {
    let trend = "How has the share of works by women changed since 1950?";
    // no summaries: search takes the whole question instead
    let route = classify(
        trend,
        Available {
            summaries: false,
            search: true,
        },
    );
    assert_eq!(route.name(), "search");
    assert_eq!(route.unavailable, [Pipeline::Summaries]);
    assert!(
        route
            .reason
            .ends_with("call for summaries, which are not available → search"),
        "{}",
        route.reason
    );
    assert_eq!(route.steps[0].query, "share women 1950");
    // nothing available: none, saying what was wanted
    let route = classify(trend, Available::default());
    assert_eq!(route.name(), "none");
    assert_eq!(route.unavailable, [Pipeline::Summaries]);
    assert!(route.reason.contains("“changed”"), "{}", route.reason);
    // a descriptive question never falls back to summaries
    let route = classify(
        "Show me works depicting storms",
        Available {
            summaries: true,
            search: false,
        },
    );
    assert_eq!(route.name(), "none");
    assert_eq!(route.unavailable, [Pipeline::Search]);
    assert!(
        route
            .reason
            .ends_with("call for search, which is not available"),
        "{}",
        route.reason
    );
    // compound without search: summaries only
    let route = classify(
        "Turner's acquisition history, and any works whose credit line mentions a bequest?",
        Available {
            summaries: true,
            search: false,
        },
    );
    assert_eq!(route.name(), "summaries");
    assert_eq!(route.unavailable, [Pipeline::Search]);
    // no cue and no search
    let route = classify(
        "grandmother",
        Available {
            summaries: true,
            search: false,
        },
    );
    assert_eq!(route.name(), "none");
    assert_eq!(
        route.reason,
        "no trend or descriptive cue, and search is not available"
    );
}

#[test]
fn cues_match_whole_words_only() {
    // "findings", "abouts", "trendy", "changedness" hold cue letters but no cue word
    let route = classify("findings trendy whereabouts", ALL);
    assert_eq!(
        route.reason,
        "no trend or descriptive cue → search for the question's words"
    );
    assert_eq!(route.steps[0].query, "findings trendy whereabouts");
    // a year needs four digits; a decade ends in 0s
    assert_eq!(classify("since 195", ALL).name(), "search");
    let route = classify("since 1950", ALL);
    assert_eq!(route.name(), "summaries");
    assert_eq!(
        route.steps[0].query, "1950",
        "a year matched by a placeholder stays"
    );
}

#[test]
fn text_is_normalised() {
    assert_eq!(
        tokens("Turner’s  WORKS, J.M.W. o'Keeffe's 1980s"),
        ["turner", "works", "j", "m", "w", "o", "keeffe", "1980s"]
    );
    assert_eq!(
        clauses("J.M.W. Turner's history, and also works of 1850. Done; ok? yes: no!"),
        [
            "J.M.W. Turner's history",
            "works of 1850",
            "Done",
            "ok",
            "yes",
            "no"
        ]
    );
    assert_eq!(clauses("a as well as b"), ["a", "b"]);
    assert_eq!(clauses("price 3.5 m"), ["price 3.5 m"]);
}

#[test]
fn patterns_match_with_placeholders_and_gaps() {
    let words = tokens("which of the large works show ships since 1850");
    let hits = find(&words, &["which ... show", "since {year}", "{decade}"]);
    let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
    assert_eq!(texts, ["which of the large works show", "since 1850"]);
    assert_eq!(hits[0].literal, [0, 5], "the gap's words are not cue words");
    assert_eq!(hits[1].literal, [7], "the year is kept");
    // a gap is at most four words
    assert!(find(&tokens("which a b c d e show"), &["which ... show"]).is_empty());
}

#[test]
fn cue_patterns_are_well_formed() {
    for pattern in TREND_CUES
        .iter()
        .chain(SHARE_CUES)
        .chain(TIME_CUES)
        .chain(DESCRIPTIVE_CUES)
    {
        let words: Vec<&str> = pattern.split_whitespace().collect();
        assert!(!words.is_empty(), "{pattern:?}");
        assert!(
            words.first() != Some(&"...") && words.last() != Some(&"..."),
            "{pattern:?}: a gap must sit between words"
        );
        for word in words {
            assert!(
                word == "..." || word == "{year}" || word == "{decade}" || tokens(word) == [word],
                "{pattern:?}: {word:?} is not a normalised word"
            );
        }
    }
}

#[test]
fn the_collection_named_in_the_question_is_searched() {
    let names = ["artists", "artworks"];
    assert_eq!(
        pick_collection("show me artworks of ships", &names),
        Some(1)
    );
    assert_eq!(pick_collection("an artwork of ships", &names), Some(1));
    assert_eq!(pick_collection("ships", &names), Some(0));
    assert_eq!(pick_collection("ships", &[]), None);
}

#[test]
fn entities_are_the_longest_capitalised_run() {
    let route = classify(
        "How has Rogier van der Weyden's work been collected over time, by Tate?",
        ALL,
    );
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().entity.as_deref(),
        Some("Rogier van der Weyden")
    );
    let route = classify("How Has The Collection Changed", ALL);
    assert_eq!(
        route.step(Pipeline::Summaries).unwrap().entity.as_deref(),
        Some("Collection"),
        "leading question and cue words are not a name: {route:?}"
    );
}

#[test]
fn the_documented_examples_hold() {
    for (question, name, summaries, search) in [
        (
            "How has the share of works by women changed since 1950?",
            "summaries",
            Some((None, "share women 1950")),
            None,
        ),
        (
            "Show me works whose credit line mentions a bequest",
            "search",
            None,
            Some("bequest"),
        ),
        (
            "Turner's acquisition history, and any works whose credit line mentions a bequest?",
            "summaries+search",
            Some((Some("Turner"), "turner")),
            Some("bequest"),
        ),
        (
            "watercolours of storms at sea",
            "search",
            None,
            Some("watercolours storms sea"),
        ),
        (
            "Which painting would my grandmother like best?",
            "search",
            None,
            Some("painting grandmother like best"),
        ),
        ("hello there", "none", None, None),
    ] {
        let route = classify(question, ALL);
        assert_eq!(route.name(), name, "{question}: {}", route.reason);
        assert_eq!(
            route
                .step(Pipeline::Summaries)
                .map(|s| (s.entity.as_deref(), s.query.as_str())),
            summaries,
            "{question}"
        );
        assert_eq!(
            route.step(Pipeline::Search).map(|s| s.query.as_str()),
            search,
            "{question}"
        );
    }
}
