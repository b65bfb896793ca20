//! Grounding check: the numbers an answer states that appear in no tool
//! result the model saw (nor in the question). A model that invents or
//! miscopies a figure is flagged in the final event instead of trusted.
//!
//! A number is a run of digits, optionally with `,` thousands groups and a
//! decimal part (`39,391`, `12.3`, `-4.5`), not glued to a preceding letter,
//! digit or `_` (so identifiers such as `d6309` or `call_1` are not numbers).
//! Whole numbers from 0 to 10 are ignored (list positions, "two works",
//! "top 5"). An answer number is grounded when some evidence number equals
//! it, or rounds to it at the answer's number of decimals (the answer may
//! say 12.3 where the result has 12.345).

/// `(as written, value, decimals)` of every number in `text`.
pub fn numbers(text: &str) -> Vec<(String, f64, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let negative = c == '-'
            && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            && !prev.is_some_and(|p| p.is_alphanumeric() || p == '_');
        if !(c.is_ascii_digit() || negative)
            || prev.is_some_and(|p| p.is_alphanumeric() || p == '_' || p == '.')
        {
            i += 1;
            continue;
        }
        let start = i;
        if negative {
            i += 1;
        }
        let mut digits = String::new();
        if negative {
            digits.push('-');
        }
        while i < chars.len() {
            let d = chars[i];
            if d.is_ascii_digit() {
                digits.push(d);
                i += 1;
            } else if d == ','
                && chars
                    .get(i + 1..i + 4)
                    .is_some_and(|g| g.iter().all(char::is_ascii_digit))
                && !chars.get(i + 4).is_some_and(char::is_ascii_digit)
            {
                i += 1;
            } else {
                break;
            }
        }
        let mut decimals = 0;
        if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
            digits.push('.');
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                digits.push(chars[i]);
                decimals += 1;
                i += 1;
            }
        }
        if let Ok(value) = digits.parse::<f64>() {
            out.push((chars[start..i].iter().collect(), value, decimals));
        }
    }
    out
}

/// The numbers of `answer` (as written, in order, each once) that no text of
/// `evidence` grounds (see the module docs).
pub fn ungrounded<S: AsRef<str>>(answer: &str, evidence: &[S]) -> Vec<String> {
    let known: Vec<f64> = evidence
        .iter()
        .flat_map(|e| numbers(e.as_ref()))
        .map(|(_, v, _)| v)
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (written, value, decimals) in numbers(answer) {
        if decimals == 0 && (0.0..=10.0).contains(&value) {
            continue;
        }
        let scale = 10f64.powi(i32::try_from(decimals).unwrap_or(i32::MAX).min(12));
        let grounded = known
            .iter()
            .any(|k| *k == value || ((k * scale).round() / scale - value).abs() < 0.5 / scale);
        if !grounded && !out.contains(&written) {
            out.push(written);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_found_with_separators_decimals_and_signs_but_not_in_identifiers() {
        let found: Vec<(String, f64)> =
            numbers("39,391 works, 12.3% (-4.5 pp) in 1950; d6309 call_1 v2.0 1,2")
                .into_iter()
                .map(|(w, v, _)| (w, v))
                .collect();
        assert_eq!(
            found,
            [
                ("39,391".to_string(), 39391.0),
                ("12.3".to_string(), 12.3),
                ("-4.5".to_string(), -4.5),
                ("1950".to_string(), 1950.0),
                ("1".to_string(), 1.0),
                ("2".to_string(), 2.0),
            ]
        );
    }

    #[test]
    fn answer_numbers_absent_from_the_evidence_are_flagged() {
        let evidence = [
            "rows: 1 (complete result)\ncolumns: n (int8)\n300\n",
            "share_pct 21.94, works 1684",
            "How many works since 1950?",
        ];
        assert_eq!(
            ungrounded(
                "Tate holds 300 works; 1,684 since 1950 (21.9%), and 1,234 paintings, top 3.",
                &evidence
            ),
            ["1,234"]
        );
        assert!(
            ungrounded("About 22% of them.", &evidence).is_empty(),
            "21.94 rounds to 22"
        );
        assert_eq!(ungrounded("About 25% of them.", &evidence), ["25"]);
        assert!(ungrounded("Nothing numeric here, or only 2.", &evidence).is_empty());
        assert_eq!(ungrounded("999 and 999 again", &evidence), ["999"]);
    }
}
