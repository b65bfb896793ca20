//! Quoting names and strings into SQL text (PostgreSQL 16 docs §4.1.1 and
//! §4.1.2.1).

/// `name` quoted as a PostgreSQL identifier: in double quotes, inner double
/// quotes doubled, so the name is used exactly as given (case included).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` quoted as a PostgreSQL string literal that reads back as `text`
/// whatever `standard_conforming_strings` is when the SQL is parsed: in
/// single quotes with inner single quotes doubled; with a backslash in
/// `text`, as an escape string (`E'…'`, every backslash doubled), as
/// PostgreSQL's own `quote_literal` does (PostgreSQL 16 docs §4.1.2.2 and
/// §9.4). A plain `'…'` would not do there: with the setting off (a
/// database or role may set it), a backslash escapes the quote after it,
/// and the rest of the text would be read as SQL.
pub fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_ident("Tate"), "\"Tate\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_literal(r"\'"), r"E'\\'''");
    }
}
