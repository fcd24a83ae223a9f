//! A small SQL lexer for the log hook (`crate::http::redact`): enough of PostgreSQL's lexer to
//! tell code from comments, string literals and quoted identifiers, and to decode what a literal
//! stands for. Pure Rust on bytes (the server encoding need not be UTF-8).
//!
//! Recognised: `--` comments, nested `/* */` comments, `'...'` (with `''`), `E'...'` (backslash
//! escapes), `U&'...'` and `U&"..."` (with `UESCAPE 'c'`), `B''`/`X''`/`N''`, `$tag$...$tag$`,
//! `"quoted identifiers"`, identifiers, numbers, parameters (`$1`), `||` and other punctuation.
//! Unterminated literals and comments run to the end of the text.

/// What a string literal was written as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quote {
    /// `'...'` (also `N''`, `B''`, `X''`): `''` is a quote.
    Plain,
    /// `E'...'`: backslash escapes.
    Escape,
    /// `U&'...'`: `\XXXX` and `\+XXXXXX` (or another escape character given by `UESCAPE`).
    Unicode,
    /// `$tag$...$tag$`: as written.
    Dollar,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A string literal: how it was quoted.
    Str(Quote),
    /// An unquoted identifier or key word (its value in lower case).
    Ident,
    /// A quoted identifier (its value decoded, case kept).
    QuotedIdent,
    /// `||`.
    Concat,
    /// Any other single byte of punctuation or an operator.
    Punct(u8),
    /// A number or a parameter (`$1`).
    Other,
}

#[derive(Clone, Debug)]
pub struct Token {
    pub kind: Kind,
    /// The byte range of the contents (between the quotes for literals and quoted identifiers,
    /// the whole token otherwise).
    pub content: (usize, usize),
    /// What the token stands for: a literal's or quoted identifier's decoded value, an
    /// identifier in lower case; empty for other tokens.
    pub value: Vec<u8>,
    /// Whether the white space (and comments) before the token hold a newline.
    pub newline_before: bool,
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn ident_cont(c: u8) -> bool {
    ident_start(c) || c.is_ascii_digit()
}

/// The end of a quoted run starting after the opening `q` at `i`: the index of the closing `q`
/// (a doubled `q` is part of the run; with `backslash`, a backslash escapes the next byte), or
/// `s.len()` if unterminated.
fn quoted_end(s: &[u8], mut i: usize, q: u8, backslash: bool) -> usize {
    while i < s.len() {
        if backslash && s[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i] == q {
            if s.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i;
        }
        i += 1;
    }
    s.len()
}

/// The tokens of `s`.
pub fn lex(s: &[u8]) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let mut i = 0;
    let mut newline = false;
    let push = |out: &mut Vec<Token>, kind, a: usize, b: usize, nl: &mut bool| {
        out.push(Token {
            kind,
            content: (a, b),
            value: Vec::new(),
            newline_before: *nl,
        });
        *nl = false;
    };
    // Unicode literals and identifiers, decoded after UESCAPE is known
    let mut unicode: Vec<usize> = Vec::new();
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        match c {
            b'\n' => {
                newline = true;
                i += 1;
            }
            c if c.is_ascii_whitespace() => i += 1,
            b'-' if next == Some(b'-') => {
                while i < s.len() && s[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if next == Some(b'*') => {
                let mut depth = 0usize;
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
                        newline |= s[i] == b'\n';
                        i += 1;
                    }
                }
            }
            b'\'' => {
                let end = quoted_end(s, i + 1, b'\'', false);
                push(&mut out, Kind::Str(Quote::Plain), i + 1, end, &mut newline);
                i = end + 1;
            }
            b'"' => {
                let end = quoted_end(s, i + 1, b'"', false);
                push(&mut out, Kind::QuotedIdent, i + 1, end, &mut newline);
                i = end + 1;
            }
            b'e' | b'E' if next == Some(b'\'') => {
                let end = quoted_end(s, i + 2, b'\'', true);
                push(&mut out, Kind::Str(Quote::Escape), i + 2, end, &mut newline);
                i = end + 1;
            }
            b'b' | b'B' | b'x' | b'X' | b'n' | b'N' if next == Some(b'\'') => {
                let end = quoted_end(s, i + 2, b'\'', false);
                push(&mut out, Kind::Str(Quote::Plain), i + 2, end, &mut newline);
                i = end + 1;
            }
            b'u' | b'U' if next == Some(b'&') && matches!(s.get(i + 2), Some(b'\'' | b'"')) => {
                let q = s[i + 2];
                let end = quoted_end(s, i + 3, q, false);
                let kind = if q == b'\'' {
                    Kind::Str(Quote::Unicode)
                } else {
                    Kind::QuotedIdent
                };
                unicode.push(out.len());
                push(&mut out, kind, i + 3, end, &mut newline);
                i = end + 1;
            }
            c if ident_start(c) => {
                let a = i;
                while i < s.len() && (ident_cont(s[i]) || s[i] == b'$') {
                    i += 1;
                }
                push(&mut out, Kind::Ident, a, i, &mut newline);
            }
            b'$' if next.is_some_and(|d| d.is_ascii_digit()) => {
                let a = i;
                i += 1;
                while i < s.len() && s[i].is_ascii_digit() {
                    i += 1;
                }
                push(&mut out, Kind::Other, a, i, &mut newline);
            }
            b'$' => {
                let mut j = i + 1;
                if j < s.len() && ident_start(s[j]) {
                    while j < s.len() && ident_cont(s[j]) {
                        j += 1;
                    }
                }
                if s.get(j) == Some(&b'$') {
                    let tag = &s[i..=j];
                    let start = j + 1;
                    let end = memchr::memmem::find(&s[start..], tag)
                        .map(|p| start + p)
                        .unwrap_or(s.len());
                    push(&mut out, Kind::Str(Quote::Dollar), start, end, &mut newline);
                    i = end + tag.len();
                } else {
                    push(&mut out, Kind::Punct(b'$'), i, i + 1, &mut newline);
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || (c == b'.' && next.is_some_and(|d| d.is_ascii_digit())) => {
                let a = i;
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_' || s[i] == b'.')
                {
                    i += 1;
                }
                push(&mut out, Kind::Other, a, i, &mut newline);
            }
            b'|' if next == Some(b'|') => {
                push(&mut out, Kind::Concat, i, i + 2, &mut newline);
                i += 2;
            }
            c => {
                push(&mut out, Kind::Punct(c), i, i + 1, &mut newline);
                i += 1;
            }
        }
    }
    for t in out.iter_mut() {
        let (a, b) = t.content;
        let raw = &s[a..b.min(s.len())];
        t.value = match t.kind {
            Kind::Ident => raw.to_ascii_lowercase(),
            Kind::QuotedIdent => undouble(raw, b'"'),
            Kind::Str(Quote::Plain) => undouble(raw, b'\''),
            Kind::Str(Quote::Escape) => decode_escape(raw),
            Kind::Str(Quote::Dollar) => raw.to_vec(),
            _ => Vec::new(),
        };
    }
    for k in unicode {
        // U&'...' UESCAPE 'c'
        let esc = match (out.get(k + 1), out.get(k + 2)) {
            (Some(u), Some(c))
                if u.kind == Kind::Ident
                    && u.value == b"uescape"
                    && c.kind == Kind::Str(Quote::Plain)
                    && c.value.len() == 1 =>
            {
                c.value[0]
            }
            _ => b'\\',
        };
        let (a, b) = out[k].content;
        let q = if out[k].kind == Kind::QuotedIdent {
            b'"'
        } else {
            b'\''
        };
        out[k].value = decode_unicode(&undouble(&s[a..b.min(s.len())], q), esc);
    }
    out
}

/// `raw` with each doubled `q` made single.
pub fn undouble(raw: &[u8], q: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut k = 0;
    while k < raw.len() {
        out.push(raw[k]);
        k += if raw[k] == q && raw.get(k + 1) == Some(&q) {
            2
        } else {
            1
        };
    }
    out
}

fn hex_digits(raw: &[u8], at: usize, max: usize) -> (u32, usize) {
    let mut v = 0u32;
    let mut n = 0;
    while n < max {
        match raw.get(at + n).and_then(|&c| (c as char).to_digit(16)) {
            Some(d) => v = v * 16 + d,
            None => break,
        }
        n += 1;
    }
    (v, n)
}

/// Appends code point `cp` as UTF-8, pairing a high surrogate left in `pending` with a low one.
fn push_code_point(out: &mut Vec<u8>, pending: &mut Option<u32>, cp: u32) {
    let cp = match (pending.take(), cp) {
        (Some(hi), lo) if (0xDC00..0xE000).contains(&lo) => {
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        }
        (_, hi) if (0xD800..0xDC00).contains(&hi) => {
            *pending = Some(hi);
            return;
        }
        (_, cp) => cp,
    };
    if let Some(ch) = char::from_u32(cp) {
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
}

/// The value of an `E'...'` literal's contents (also what a `'...'` literal stands for with
/// `standard_conforming_strings = off`): `\b \f \n \r \t`, octal `\o`..`\ooo`, `\xH`/`\xHH`,
/// `\uXXXX`, `\UXXXXXXXX`, any other escaped byte as itself, and `''`.
pub fn decode_escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pending = None;
    let mut k = 0;
    while k < raw.len() {
        let c = raw[k];
        if c == b'\'' && raw.get(k + 1) == Some(&b'\'') {
            out.push(b'\'');
            k += 2;
            continue;
        }
        if c != b'\\' || k + 1 >= raw.len() {
            out.push(c);
            k += 1;
            continue;
        }
        let e = raw[k + 1];
        k += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut n = 0;
                while n < 2 && matches!(raw.get(k), Some(b'0'..=b'7')) {
                    v = v * 8 + (raw[k] - b'0') as u32;
                    k += 1;
                    n += 1;
                }
                out.push(v as u8);
            }
            b'x' => match hex_digits(raw, k, 2) {
                (_, 0) => out.push(b'x'),
                (v, n) => {
                    out.push(v as u8);
                    k += n;
                }
            },
            b'u' | b'U' => {
                let want = if e == b'u' { 4 } else { 8 };
                match hex_digits(raw, k, want) {
                    (v, n) if n == want => {
                        push_code_point(&mut out, &mut pending, v);
                        k += n;
                    }
                    _ => out.push(e),
                }
            }
            e => out.push(e),
        }
    }
    out
}

/// The value of a `U&'...'` literal's contents (doubled quotes already undone) with escape
/// character `esc`: `\XXXX`, `\+XXXXXX`, `\\`.
pub fn decode_unicode(raw: &[u8], esc: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut pending = None;
    let mut k = 0;
    while k < raw.len() {
        if raw[k] != esc {
            out.push(raw[k]);
            k += 1;
            continue;
        }
        if raw.get(k + 1) == Some(&esc) {
            out.push(esc);
            k += 2;
            continue;
        }
        let (at, want) = if raw.get(k + 1) == Some(&b'+') {
            (k + 2, 6)
        } else {
            (k + 1, 4)
        };
        match hex_digits(raw, at, want) {
            (v, n) if n == want => {
                push_code_point(&mut out, &mut pending, v);
                k = at + n;
            }
            _ => {
                out.push(raw[k]);
                k += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(s: &str) -> Vec<(Quote, String)> {
        lex(s.as_bytes())
            .into_iter()
            .filter_map(|t| match t.kind {
                Kind::Str(q) => Some((q, String::from_utf8_lossy(&t.value).into_owned())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn literals_are_decoded() {
        use Quote::*;
        assert_eq!(
            strs(
                r"SELECT 'it''s', E'a\'b\\c\n\x4c\101\u00e9\U0001F600\uD83D\uDE00\q', $x$ '$$' $x$"
            ),
            vec![
                (Plain, "it's".into()),
                (Escape, "a'b\\c\nLAé😀😀q".into()),
                (Dollar, " '$$' ".into())
            ]
        );
        assert_eq!(
            strs(r"SELECT U&'\004cE\+01F600\\', u&'!0041!!' UESCAPE '!', U&'d\0061t''a'"),
            vec![
                (Unicode, "LE😀\\".into()),
                (Unicode, "A!".into()),
                (Plain, "!".into()),
                (Unicode, "dat'a".into())
            ]
        );
    }

    #[test]
    fn comments_identifiers_and_parameters_are_not_literals() {
        let t = lex(
            "SELECT /* a /* 'b' */ 'c' */ \"x'y\", U&\"\\0041\" -- 'd'\n, $1, a$b, 1e5 || x"
                .as_bytes(),
        );
        let kinds: Vec<_> = t
            .iter()
            .map(|t| (t.kind.clone(), t.value.clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (Kind::Ident, b"select".to_vec()),
                (Kind::QuotedIdent, b"x'y".to_vec()),
                (Kind::Punct(b','), vec![]),
                (Kind::QuotedIdent, b"A".to_vec()),
                (Kind::Punct(b','), vec![]),
                (Kind::Other, vec![]),
                (Kind::Punct(b','), vec![]),
                (Kind::Ident, b"a$b".to_vec()),
                (Kind::Punct(b','), vec![]),
                (Kind::Other, vec![]),
                (Kind::Concat, vec![]),
                (Kind::Ident, b"x".to_vec()),
            ]
        );
        assert!(t[4].newline_before);
    }
}
