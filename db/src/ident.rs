//! Quoting names and strings into SQL text (PostgreSQL 16 docs §4.1.1 and
//! §4.1.2.1).

/// `name` quoted as a PostgreSQL identifier: in double quotes, inner double
/// quotes doubled, so the name is used exactly as given (case included).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` quoted as a PostgreSQL string literal (standard-conforming: in
/// single quotes, inner single quotes doubled, backslashes ordinary).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote_ident("Tate"), "\"Tate\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "'a\\b'");
    }
}
