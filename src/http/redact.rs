//! What the log hook (`crate::http::loghook`) masks in a log entry raised while a statement that
//! sets a secret runs (`pulse.set_secret(...)`): the
//! statement text of such a statement holds the value, and PostgreSQL logs it in a STATEMENT line
//! after an error (even one raised while parsing, before pg_pulse runs), in `log_statement` and
//! `log_min_duration_statement` lines, and in the parameters of the extended protocol.
//!
//! Pure Rust on bytes (the server encoding need not be UTF-8). Masking is in place and keeps the
//! length: every byte of a masked part becomes `*`. Masked are:
//! * the contents of every string literal in a log field as SQL's lexer sees them (`'...'`,
//!   `E'...'`, `$tag$...$tag$`): a logged statement text, `parameters: $1 = '...'`;
//! * anywhere in a field, the contents of every string literal of the statement (8 bytes or
//!   more: pg_pulse refuses shorter secrets), also inside dollar-quoted bodies (a DO block);
//! * the token of a syntax error (`at or near "..."`), which may be a piece of a badly quoted value.

/// Literal contents shorter than this are masked only where they stand as literals.
pub const MIN_NEEDLE: usize = 8;

/// Whether a statement's text names `set_secret` (`set_secret_from_file` takes no value: its
/// statements, which name a file, are logged as they are).
pub fn sets_secret(statement: &[u8]) -> bool {
    statement.windows(10).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(b"set_secret")
            && !statement[i + 10..]
                .get(..10)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"_from_file"))
    })
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The byte ranges of the contents of the string literals in `s` (an unterminated literal runs
/// to the end), skipping comments and quoted identifiers.
pub fn literals(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'-' if s.get(i + 1) == Some(&b'-') => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if s.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < s.len() {
                    if s[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if s[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < s.len() {
                    if s[i] == b'"' {
                        if s.get(i + 1) == Some(&b'"') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'\'' => {
                let escapes = i > 0
                    && s[i - 1].eq_ignore_ascii_case(&b'e')
                    && (i < 2 || !ident_byte(s[i - 2]));
                let start = i + 1;
                i += 1;
                while i < s.len() {
                    if escapes && s[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if s[i] == b'\'' {
                        if s.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                out.push((start, i.min(s.len())));
                i += 1;
            }
            b'$' if i == 0 || !ident_byte(s[i - 1]) => {
                // $tag$ (tag: an identifier not starting with a digit, or empty); $1 is a parameter
                let mut j = i + 1;
                while j < s.len() && ident_byte(s[j]) && !(j == i + 1 && s[j].is_ascii_digit()) {
                    j += 1;
                }
                if j < s.len() && s[j] == b'$' {
                    let tag = &s[i..=j];
                    let start = j + 1;
                    let end = s[start..]
                        .windows(tag.len())
                        .position(|w| w == tag)
                        .map(|p| start + p)
                        .unwrap_or(s.len());
                    out.push((start, end));
                    i = end + tag.len();
                } else {
                    i += 1;
                }
            }
            b if ident_byte(b) => {
                while i < s.len() && (ident_byte(s[i]) || s[i] == b'$') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The values a statement's literals stand for, 8 bytes or more: each literal's contents as
/// written and with doubled quotes undone, and the literals inside dollar-quoted bodies.
pub fn needles(statement: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut todo = vec![(statement.to_vec(), 0)];
    while let Some((text, depth)) = todo.pop() {
        for (a, b) in literals(&text) {
            let lit = text[a..b].to_vec();
            let mut undone = Vec::with_capacity(lit.len());
            let mut k = 0;
            while k < lit.len() {
                undone.push(lit[k]);
                k += if lit[k] == b'\'' && lit.get(k + 1) == Some(&b'\'') {
                    2
                } else {
                    1
                };
            }
            if depth < 3 && lit.iter().any(|&c| c == b'\'' || c == b'$') {
                todo.push((lit.clone(), depth + 1));
            }
            for n in [lit, undone] {
                if n.len() >= MIN_NEEDLE && !out.contains(&n) {
                    out.push(n);
                }
            }
        }
    }
    out
}

fn mask(b: &mut [u8]) {
    b.iter_mut().for_each(|c| *c = b'*');
}

/// Masks one field of a log entry (message, detail, hint, context...) of a statement that sets a
/// secret; `needles` from [`needles`] of the statement.
pub fn mask_field(field: &mut [u8], needles: &[Vec<u8>]) {
    for (a, b) in literals(field) {
        mask(&mut field[a..b]);
    }
    for n in needles {
        let mut i = 0;
        while let Some(p) = memchr::memmem::find(&field[i..], n) {
            mask(&mut field[i + p..i + p + n.len()]);
            i += p + n.len();
        }
    }
    const NEAR: &[u8] = b"at or near \"";
    if let Some(p) = memchr::memmem::find(field, NEAR) {
        let start = p + NEAR.len();
        let end = field
            .iter()
            .rposition(|&c| c == b'"')
            .unwrap_or(field.len());
        if end > start {
            mask(&mut field[start..end]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn masked(field: &str, statement: &str) -> String {
        let mut b = field.as_bytes().to_vec();
        mask_field(&mut b, &needles(statement.as_bytes()));
        String::from_utf8(b).unwrap()
    }

    #[test]
    fn recognises_statements_that_set_secrets() {
        assert!(sets_secret(b"SELECT pulse.SET_SECRET('k', 'v') FROM t"));
        assert!(!sets_secret(
            b"select pulse.set_secret_from_file('k', '/x')"
        ));
        assert!(sets_secret(
            b"select pulse.set_secret_from_file('k', '/x'), pulse.set_secret('a', 'b')"
        ));
        assert!(!sets_secret(b"SELECT pulse.drop_secret('k')"));
    }

    #[test]
    fn statement_lines_and_parameters_lose_their_literals() {
        let st = "SELECT pulse.set_secret('api_key', 'it''s-a-secret') FROM missing";
        assert_eq!(
            masked(&format!("statement: {st}"), st),
            "statement: SELECT pulse.set_secret('*******', '**************') FROM missing"
        );
        assert_eq!(
            masked(
                "parameters: $1 = 'api_key', $2 = 'sk_live_123'",
                "SELECT pulse.set_secret($1, $2)"
            ),
            "parameters: $1 = '*******', $2 = '***********'"
        );
        // E'' strings, dollar quotes, comments and identifiers
        let st = "SELECT /* 'x' */ \"we'ird\", pulse.set_secret(E'k\\'ey', $q$va'lue$q$) -- 'c'";
        assert_eq!(
            masked(st, st),
            "SELECT /* 'x' */ \"we'ird\", pulse.set_secret(E'*****', $q$******$q$) -- 'c'"
        );
    }

    #[test]
    fn values_elsewhere_in_a_message_are_masked() {
        let st = "SELECT pulse.set_secret('k', 'topsecret1'::int)";
        assert_eq!(
            masked("invalid input syntax for type integer: \"topsecret1\"", st),
            "invalid input syntax for type integer: \"**********\""
        );
        // inside a DO block
        let st = "DO $$ BEGIN PERFORM pulse.set_secret('k', 'in-a-do-block'); END $$";
        assert_eq!(masked("x in-a-do-block y", st), "x ************* y");
        // the token of a syntax error
        let st = "SELECT pulse.set_secret('k', 'abc'defghij')";
        assert_eq!(
            masked("syntax error at or near \"defghij\"", st),
            "syntax error at or near \"*******\""
        );
        // an ordinary message keeps its words
        assert_eq!(
            masked(
                "relation \"missing_table\" does not exist",
                "SELECT pulse.set_secret('k', 'vvvvvvvv') FROM missing_table"
            ),
            "relation \"missing_table\" does not exist"
        );
    }

    proptest! {
        #[test]
        fn literal_values_never_survive(v in "[^'\\\\$]{8,30}", pre in "[a-z ,()]{0,10}") {
            let st = format!("SELECT {pre} pulse.set_secret('name', '{v}') FROM nowhere");
            for field in [format!("statement: {st}"), format!("error about \"{v}\""), format!("{pre}{v}{pre}")] {
                let m = masked(&field, &st);
                prop_assert!(!m.contains(&v), "{}", m);
                prop_assert_eq!(m.len(), field.len());
            }
        }

        #[test]
        fn never_panics(field in "\\PC{0,40}", st in "\\PC{0,40}") {
            let m = masked(&field, &st);
            prop_assert_eq!(m.len(), field.len());
        }
    }
}
