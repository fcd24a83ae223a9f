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
//!
//! Which statements set secrets, and what their literals stand for, comes from a small SQL lexer
//! (`crate::http::sqllex`): `set_secret` in a comment or a string literal does not count.

use crate::http::sqllex::{decode_escape, lex, Kind, Quote, Token};

/// Literal contents shorter than this are masked only where they stand as literals.
pub const MIN_NEEDLE: usize = 8;

/// How deep literals are lexed again as code (a DO block's body, an `EXECUTE` string in it...).
const MAX_DEPTH: usize = 3;

/// Whether `s` may name `set_secret` at all: the cheap test that runs for every log entry
/// (`set_secret` in any case, or a `U&"..."` identifier, which may spell it with escapes).
fn might_name(s: &[u8]) -> bool {
    memchr::memchr_iter(b'_', s).any(|p| {
        p >= 3
            && s[p - 3..p].eq_ignore_ascii_case(b"set")
            && s[p + 1..]
                .get(..6)
                .is_some_and(|t| t.eq_ignore_ascii_case(b"secret"))
    }) || memchr::memmem::find(s, b"&\"").is_some()
}

/// Whether a statement's text calls `set_secret`: the identifier `set_secret` (unquoted in any
/// case, or `"set_secret"`; `pulse.` or not) followed by `(`, in code: not in a comment, a
/// string literal or another identifier (`set_secret_from_file` takes no value: its statements,
/// which name a file, are logged as they are). The bodies of `DO` and `CREATE FUNCTION` /
/// `CREATE PROCEDURE` statements are code too, whatever their quotes, and so are the literals
/// of an `EXECUTE` statement inside such a body (dynamic SQL).
pub fn sets_secret(statement: &[u8]) -> bool {
    might_name(statement) && calls(statement, 0)
}

fn calls(text: &[u8], depth: usize) -> bool {
    let toks = lex(text);
    // the current statement is DO or CREATE FUNCTION/PROCEDURE, or (inside such a body)
    // EXECUTE of dynamic SQL: its literals are code
    let mut body = false;
    let mut first = true;
    for (i, t) in toks.iter().enumerate() {
        let word = |w: &[u8]| t.kind == Kind::Ident && t.value == w;
        if first {
            body = word(b"do");
            first = false;
        }
        if word(b"function") || word(b"procedure") {
            body |= statement_starts_with_create(&toks, i);
        }
        body |= depth > 0 && word(b"execute");
        match t.kind {
            Kind::Punct(b';') => first = true,
            Kind::Ident | Kind::QuotedIdent
                if t.value == b"set_secret"
                    && toks.get(i + 1).map(|n| &n.kind) == Some(&Kind::Punct(b'(')) =>
            {
                return true
            }
            Kind::Str(_)
                if body
                    && depth < MAX_DEPTH
                    && might_name(&t.value)
                    && calls(&t.value, depth + 1) =>
            {
                return true
            }
            _ => {}
        }
    }
    false
}

/// Whether the statement holding token `i` starts with `CREATE`.
fn statement_starts_with_create(toks: &[Token], i: usize) -> bool {
    let start = toks[..i]
        .iter()
        .rposition(|t| t.kind == Kind::Punct(b';'))
        .map_or(0, |p| p + 1);
    toks[start].kind == Kind::Ident && toks[start].value == b"create"
}

/// The byte ranges of the contents of the string literals in `s` (an unterminated literal runs
/// to the end), skipping comments and quoted identifiers.
pub fn literals(s: &[u8]) -> Vec<(usize, usize)> {
    lex(s)
        .into_iter()
        .filter(|t| matches!(t.kind, Kind::Str(_)))
        .map(|t| t.content)
        .collect()
}

/// The bytes a `\x...` bytea literal in hex stands for.
fn bytea_hex(v: &[u8]) -> Option<Vec<u8>> {
    let h = v.strip_prefix(b"\\x")?;
    let h: Vec<u8> = h
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !h.len().is_multiple_of(2) || !h.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let d = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    Some(h.chunks(2).map(|p| d(p[0]) * 16 + d(p[1])).collect())
}

/// The values a statement's literals stand for, 8 bytes or more: each literal's contents as
/// written and decoded (`''`, `E''` escapes, `U&''` escapes; a plain literal also as
/// `standard_conforming_strings = off` reads it; a bytea's `\x` hex), literals joined by `||` or
/// by a newline (SQL's continuation) as one value, and, the same way, the literals inside
/// literals (a DO block's body).
pub fn needles(statement: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let add = |n: Vec<u8>, out: &mut Vec<Vec<u8>>| {
        if n.len() >= MIN_NEEDLE && !out.contains(&n) {
            out.push(n);
        }
    };
    let mut todo = vec![(statement.to_vec(), 0)];
    while let Some((text, depth)) = todo.pop() {
        let toks = lex(&text);
        let mut chain: Vec<u8> = Vec::new();
        let mut chained = 0;
        let mut joined = false; // the previous token was `||`
        for t in &toks {
            let Kind::Str(q) = t.kind else {
                joined = t.kind == Kind::Concat && chained > 0;
                if !joined {
                    if chained > 1 {
                        add(std::mem::take(&mut chain), &mut out);
                    }
                    chain.clear();
                    chained = 0;
                }
                continue;
            };
            if !(joined || (chained > 0 && t.newline_before)) {
                if chained > 1 {
                    add(std::mem::take(&mut chain), &mut out);
                }
                chain.clear();
                chained = 0;
            }
            joined = false;
            chain.extend_from_slice(&t.value);
            chained += 1;
            let (a, b) = t.content;
            add(text[a..b.min(text.len())].to_vec(), &mut out);
            add(t.value.clone(), &mut out);
            if q == Quote::Plain && t.value.contains(&b'\\') {
                add(decode_escape(&t.value), &mut out);
            }
            if let Some(b) = bytea_hex(&t.value) {
                add(b, &mut out);
            }
            if depth < MAX_DEPTH && t.value.iter().any(|&c| c == b'\'' || c == b'$') {
                todo.push((t.value.clone(), depth + 1));
            }
        }
        if chained > 1 {
            add(chain, &mut out);
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
#[path = "redact_tests.rs"]
mod tests;
