//! The detectors: e-mail addresses, phone numbers, payment card numbers and
//! IBANs in free text.
//!
//! Each finder looks for candidates with a regular expression compiled once,
//! then validates them: cards with the Luhn check (ISO/IEC 7812-1), IBANs
//! with MOD 97-10 (ISO 13616 / ISO 7064), phone numbers with digit counts
//! (ITU-T E.164) and shape rules that keep dates, years, decimals, amounts
//! and version numbers out.

use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;

/// What a detector finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// An e-mail address `local@domain.tld`: the practical subset of
    /// RFC 5322 (`addr-spec` without quoted local parts, comments or
    /// address literals). Local part of `A-Z a-z 0-9 . _ % + -` (no leading,
    /// trailing or double dot); domain of dot-separated labels of letters,
    /// digits and inner hyphens (at most 63 characters each, RFC 1035); a
    /// top-level domain of 2–63 letters. ASCII only.
    Email,
    /// A phone number of 7–15 digits (ITU-T E.164 allows at most 15,
    /// country code included): international `+CC …` (`+49 151 12345678`,
    /// `+4915112345678`, `+1 (555) 123-4567`) or national with separators
    /// (`(030) 1234567`, `555-123-4567`, `06 12 34 56 78`, `0049 151 1234567`).
    /// A run of digits without `+`, parentheses or separators is taken for an
    /// id, not a phone number; so are dates (`2024-01-05`, `05.01.2024`),
    /// years (`2023 2024`), decimals (`4.6999`), amounts with thousands
    /// groups (`1 234 567`), dotted versions and IPv4 addresses, and digits
    /// glued to letters or to `-`, `.`, `/`, `_` (`ORD-2024-0001`).
    Phone,
    /// A payment card number (PAN, ISO/IEC 7812-1): 13–19 digits, optionally
    /// grouped by single spaces or hyphens (`4111 1111 1111 1111`), whose
    /// last digit is a valid Luhn check digit. A number that fails the Luhn
    /// check is not a card.
    Card,
    /// An IBAN (ISO 13616-1): two capital letters (country code), two check
    /// digits, then up to 30 capital letters and digits (the BBAN), 15–34
    /// characters in all, in the electronic form (`DE89370400440532013000`)
    /// or the print form grouped by single spaces (`DE89 3704 0044 0532 0130
    /// 00`), whose check digits pass MOD 97-10 (ISO/IEC 7064) and are
    /// 02–98. Country-specific BBAN lengths are not checked.
    Iban,
}

impl PiiKind {
    /// Every kind, in the order the detectors run: the checksum-validated
    /// ones first, so that a card number is not half taken for a phone
    /// number.
    pub const ALL: [PiiKind; 4] = [PiiKind::Iban, PiiKind::Card, PiiKind::Email, PiiKind::Phone];

    /// The label of this kind's placeholders: `EMAIL`, `PHONE`, `CARD`,
    /// `IBAN` (as in `<EMAIL_1>`).
    pub fn label(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::Card => "CARD",
            PiiKind::Iban => "IBAN",
        }
    }

    /// Byte ranges of this kind's values in `text[within]` (`text` before
    /// `within` is read as context, text after it is not), in order and not
    /// overlapping.
    pub(super) fn find(self, text: &str, within: Range<usize>) -> Vec<Range<usize>> {
        let Some(hay) = text.get(..within.end) else {
            return Vec::new();
        };
        let start = within.start;
        match self {
            PiiKind::Email => EMAIL
                .find_iter(hay)
                .filter(|m| m.start() >= start)
                .map(|m| m.range())
                .collect(),
            PiiKind::Phone => find_phones(hay, start),
            PiiKind::Card => find_cards(hay, start),
            PiiKind::Iban => find_ibans(hay, start),
        }
    }
}

/// One value a detector found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// What was found.
    pub kind: PiiKind,
    /// Where, as a byte range of the text searched.
    pub range: Range<usize>,
}

/// Every value the detectors find in `text`, in order of position and not
/// overlapping (each detector searches only the text earlier ones in
/// [`PiiKind::ALL`] left).
pub fn detect(text: &str) -> Vec<Detection> {
    let mut found: Vec<Detection> = Vec::new();
    for kind in PiiKind::ALL {
        let taken: Vec<Range<usize>> = found.iter().map(|d| d.range.clone()).collect();
        for gap in gaps(text.len(), &taken) {
            found.extend(
                kind.find(text, gap)
                    .into_iter()
                    .map(|range| Detection { kind, range }),
            );
        }
        found.sort_by_key(|d| d.range.start);
    }
    found
}

/// The parts of `0..len` outside `taken` (sorted, not overlapping).
pub(super) fn gaps(len: usize, taken: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = 0;
    for range in taken {
        if range.start > at {
            out.push(at..range.start);
        }
        at = at.max(range.end);
    }
    if at < len {
        out.push(at..len);
    }
    out
}

/// Compiles one of this file's fixed patterns.
fn pattern(source: &str) -> Regex {
    match Regex::new(source) {
        Ok(regex) => regex,
        // the patterns are constants covered by the unit tests
        Err(e) => panic!("invalid built-in pii pattern: {e}"),
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b",
    )
});

/// Phone candidates: optional country code, optional area code in
/// parentheses, then digit groups joined by single separators.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    pattern(
        r"(?P<cc>\+[0-9]{1,4}[ .-]?)?(?P<area>\([0-9]{1,5}\)[ .-]?)?(?P<main>[0-9]{1,15}(?:[ .-][0-9]{1,15}){0,7})\b",
    )
});

/// Card candidates: digit groups joined by single spaces or hyphens.
static DIGIT_GROUPS: LazyLock<Regex> = LazyLock::new(|| pattern(r"\b[0-9]+(?:[ -][0-9]+)*\b"));

/// IBAN candidates: a country code and check digits, then groups of capital
/// letters and digits joined by single spaces.
static IBAN_GROUPS: LazyLock<Regex> =
    LazyLock::new(|| pattern(r"\b[A-Z]{2}[0-9]{2}[A-Z0-9]*(?: [A-Z0-9]+)*\b"));

/// Most digits in a phone number (ITU-T E.164).
const PHONE_MAX_DIGITS: usize = 15;
/// Fewest digits taken for a phone number (short national numbers and
/// extensions are left alone).
const PHONE_MIN_DIGITS: usize = 7;
/// Digits in a card number (ISO/IEC 7812-1 PAN: at most 19; 13 for the
/// oldest Visa numbers).
const CARD_DIGITS: Range<usize> = 13..20;
/// Characters in an IBAN (ISO 13616-1: at most 34; Norway's 15 the fewest).
const IBAN_CHARS: Range<usize> = 15..35;

fn find_phones(hay: &str, start: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut at = start;
    while let Some(caps) = PHONE.captures_at(hay, at) {
        let Some(whole) = caps.get(0) else { break };
        let international = caps.name("cc").is_some();
        let area = caps.name("area").is_some();
        let Some(main) = caps.name("main") else {
            continue;
        };
        let digits = whole.as_str().bytes().filter(u8::is_ascii_digit).count();
        if (PHONE_MIN_DIGITS..=PHONE_MAX_DIGITS).contains(&digits)
            && free_standing(hay, whole.range())
            && (international || area || plausible_national(hay, main.range()))
        {
            out.push(whole.range());
            at = whole.end();
        } else {
            // a phone number may start inside a rejected candidate
            // (`2024-01-05 555-123-4567`); candidates start at ASCII `+`,
            // `(` or a digit, so the next byte is a character boundary
            at = whole.start() + 1;
        }
    }
    out
}

/// Whether `range` of `hay` is a token of its own: not glued to letters,
/// digits or `+` before, nor to `-`, `.`, `/`, `_` or `,` plus a letter or
/// digit on either side (identifiers, versions, decimals).
fn free_standing(hay: &str, range: Range<usize>) -> bool {
    let before = hay.get(..range.start).unwrap_or_default();
    let after = hay.get(range.end..).unwrap_or_default();
    let joiner = |c: char| matches!(c, '-' | '.' | '/' | '_' | ',');
    let mut back = before.chars().rev();
    let glued_before = match back.next() {
        Some(c) if c.is_alphanumeric() || c == '+' => true,
        Some(c) if joiner(c) => back.next().is_some_and(char::is_alphanumeric),
        Some(_) | None => false,
    };
    let mut ahead = after.chars();
    let glued_after = match ahead.next() {
        Some(c) if joiner(c) => ahead.next().is_some_and(char::is_alphanumeric),
        Some(_) | None => false,
    };
    !glued_before && !glued_after
}

/// Shape rules for a national number without `+` or area code (`main` of
/// `hay`): grouped by one kind of separator, not the tail of a longer run of
/// groups with that separator (`3704 0044 0532 0130 00`), and not a date, a
/// list of years, a decimal, an amount with thousands groups, a dotted
/// version or an IPv4 address.
fn plausible_national(hay: &str, main: Range<usize>) -> bool {
    let before = hay.get(..main.start).unwrap_or_default();
    let main = hay.get(main).unwrap_or_default();
    let mut separators = main.chars().filter(|c| !c.is_ascii_digit());
    let Some(separator) = separators.next() else {
        return false; // a bare run of digits: an id or an amount
    };
    if separators.any(|c| c != separator) {
        return false;
    }
    let mut back = before.chars().rev();
    if back.next() == Some(separator) && back.next().is_some_and(|c| c.is_ascii_digit()) {
        return false;
    }
    let groups: Vec<usize> = main.split(separator).map(str::len).collect();
    let looks_like_date = matches!(groups.as_slice(), [4, 1..=2, 1..=2] | [1..=2, 1..=2, 2 | 4]);
    let years = groups.len() >= 2
        && main
            .split(separator)
            .all(|g| g.len() == 4 && (g.starts_with("19") || g.starts_with("20")));
    let thousands = separator != '-'
        && groups.first().is_some_and(|&first| first <= 3)
        && groups.iter().skip(1).all(|&len| len == 3);
    let dotted = separator == '.' && (groups.len() == 2 || groups.iter().all(|&len| len <= 3));
    !(looks_like_date || years || thousands || dotted)
}

/// Groups of a candidate: byte ranges of the runs between single-character
/// separators.
fn groups(hay: &str, candidate: Range<usize>, is_separator: fn(u8) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut group_start = candidate.start;
    for (i, byte) in hay.as_bytes()[candidate.clone()].iter().enumerate() {
        if is_separator(*byte) {
            out.push(group_start..candidate.start + i);
            group_start = candidate.start + i + 1;
        }
    }
    out.push(group_start..candidate.end);
    out
}

/// The longest valid run of whole groups at each leftmost position, at most
/// `max_len` bytes without separators: `valid(run without separators)`
/// decides, `first_ok(group index)` says whether a run may start there.
fn windows(
    hay: &str,
    groups: &[Range<usize>],
    max_len: usize,
    first_ok: impl Fn(usize) -> bool,
    valid: impl Fn(&str) -> bool,
) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut first = 0;
    while first < groups.len() {
        if first_ok(first) {
            let mut compact = String::new();
            let mut ends = Vec::new();
            for (last, group) in groups.iter().enumerate().skip(first) {
                compact.push_str(hay.get(group.clone()).unwrap_or_default());
                if compact.len() > max_len {
                    break;
                }
                ends.push((last, compact.len()));
            }
            let longest_valid = ends
                .iter()
                .rev()
                .find(|&&(_, len)| compact.get(..len).is_some_and(&valid));
            if let Some(&(last, _)) = longest_valid {
                out.push(groups[first].start..groups[last].end);
                first = last + 1;
                continue;
            }
        }
        first += 1;
    }
    out
}

fn find_cards(hay: &str, start: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for candidate in DIGIT_GROUPS.find_iter(hay).filter(|m| m.start() >= start) {
        let groups = groups(hay, candidate.range(), |b| b == b' ' || b == b'-');
        // `+49 …` is a phone number's country code, not a card's first digits
        let after_plus = hay[..candidate.start()].ends_with('+');
        out.extend(windows(
            hay,
            &groups,
            CARD_DIGITS.end - 1,
            |i| i > 0 || !after_plus,
            |digits| CARD_DIGITS.contains(&digits.len()) && luhn_valid(digits),
        ));
    }
    out
}

fn find_ibans(hay: &str, start: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for candidate in IBAN_GROUPS.find_iter(hay).filter(|m| m.start() >= start) {
        let groups = groups(hay, candidate.range(), |b| b == b' ');
        let starts_iban = |i: usize| {
            groups
                .get(i)
                .and_then(|g| hay.get(g.clone()))
                .is_some_and(|g| {
                    let b = g.as_bytes();
                    b.len() >= 4
                        && b[..2].iter().all(u8::is_ascii_uppercase)
                        && b[2..4].iter().all(u8::is_ascii_digit)
                })
        };
        out.extend(windows(
            hay,
            &groups,
            IBAN_CHARS.end - 1,
            starts_iban,
            iban_valid,
        ));
    }
    out
}

/// The Luhn check of ISO/IEC 7812-1 annex B: from the rightmost digit (the
/// check digit), double every second digit, subtract 9 from products above
/// 9, and the sum must be a multiple of 10. `false` for anything but ASCII
/// digits.
pub(super) fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, byte) in digits.bytes().rev().enumerate() {
        if !byte.is_ascii_digit() {
            return false;
        }
        let mut d = u32::from(byte - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    !digits.is_empty() && sum.is_multiple_of(10)
}

/// The IBAN check of ISO 13616-1 (MOD 97-10 of ISO/IEC 7064): move the
/// first four characters to the end, replace letters by 10–35 (`A` = 10),
/// and the number must leave remainder 1 when divided by 97; check digits
/// `00`, `01` and `99` are invalid. `iban` is the electronic form
/// (capital letters and digits, no spaces).
pub(super) fn iban_valid(iban: &str) -> bool {
    let bytes = iban.as_bytes();
    if !IBAN_CHARS.contains(&bytes.len())
        || !bytes[..2].iter().all(u8::is_ascii_uppercase)
        || !bytes[2..4].iter().all(u8::is_ascii_digit)
        || matches!(&bytes[2..4], b"00" | b"01" | b"99")
    {
        return false;
    }
    let mut remainder = 0u32;
    for &byte in bytes[4..].iter().chain(&bytes[..4]) {
        remainder = match byte {
            b'0'..=b'9' => (remainder * 10 + u32::from(byte - b'0')) % 97,
            b'A'..=b'Z' => (remainder * 100 + u32::from(byte - b'A') + 10) % 97,
            _ => return false,
        };
    }
    remainder == 1
}
