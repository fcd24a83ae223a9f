//! Scrubbing secrets from what a server sends back (status line, headers, body, errors): every
//! occurrence of a secret's value is replaced with `[secret:NAME]`, also when the server echoed
//! it encoded. Pure Rust.
//!
//! The text is searched as it is and through decoding views: JSON string escapes (`\"`, `\\`,
//! `\/`, `\n`..., `\uXXXX` in either case, surrogate pairs), percent-encoding (`%XX` in either
//! case, `+` for a space), and two layers of them in any order (a JSON-escaped value inside a
//! URL-encoded form, a JSON string inside a JSON string, a doubly URL-encoded value). Each byte
//! of a view knows the span of the original text it comes from, so a match in a view replaces
//! exactly the encoded form in the text. Values shorter than 4 bytes are left alone (they would
//! scrub ordinary text; pg_pulse refuses secrets shorter than 8 bytes, older ones may be shorter).

/// Values shorter than this are not scrubbed.
pub const MIN_SCRUBBED: usize = 4;

/// A view of the text: decoded bytes, each with the span `[start, end)` of the original text it
/// comes from.
struct View {
    bytes: Vec<u8>,
    spans: Vec<(u32, u32)>,
}

impl View {
    fn raw(s: &str) -> View {
        View {
            bytes: s.as_bytes().to_vec(),
            spans: (0..s.len() as u32).map(|i| (i, i + 1)).collect(),
        }
    }

    /// The span of view bytes `[from, to)` in the original text.
    fn span(&self, from: usize, to: usize) -> (u32, u32) {
        (self.spans[from].0, self.spans[to - 1].1)
    }

    fn push(&mut self, b: u8, span: (u32, u32)) {
        self.bytes.push(b);
        self.spans.push(span);
    }

    fn empty(cap: usize) -> View {
        View {
            bytes: Vec::with_capacity(cap),
            spans: Vec::with_capacity(cap),
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    let s = std::str::from_utf8(&b[..4]).ok()?;
    u32::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.bytes().all(|c| c.is_ascii_hexdigit()))
}

/// JSON string escapes decoded; anything else (also a broken escape) kept as it is. None when
/// there is nothing to decode.
fn json_view(v: &View) -> Option<View> {
    if !v.bytes.contains(&b'\\') {
        return None;
    }
    let b = &v.bytes;
    let mut out = View::empty(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let simple = match b[i + 1] {
                b'"' => Some(b'"'),
                b'\\' => Some(b'\\'),
                b'/' => Some(b'/'),
                b'b' => Some(8),
                b'f' => Some(12),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b't' => Some(b'\t'),
                _ => None,
            };
            if let Some(c) = simple {
                out.push(c, v.span(i, i + 2));
                i += 2;
                continue;
            }
            if b[i + 1] == b'u' {
                if let Some(hi) = hex4(&b[i + 2..]) {
                    let (ch, len) = if (0xD800..0xDC00).contains(&hi)
                        && b.get(i + 6) == Some(&b'\\')
                        && b.get(i + 7) == Some(&b'u')
                    {
                        match hex4(&b[i + 8..]).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                            Some(lo) => (
                                char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)),
                                12,
                            ),
                            None => (None, 6),
                        }
                    } else {
                        (char::from_u32(hi), 6)
                    };
                    if let Some(ch) = ch {
                        let span = v.span(i, i + len);
                        let mut buf = [0u8; 4];
                        for &x in ch.encode_utf8(&mut buf).as_bytes() {
                            out.push(x, span);
                        }
                        i += len;
                        continue;
                    }
                }
            }
        }
        out.push(b[i], v.spans[i]);
        i += 1;
    }
    Some(out)
}

/// Percent-encoding and `+` decoded; anything else kept. None when there is nothing to decode.
fn url_view(v: &View) -> Option<View> {
    if !v.bytes.iter().any(|&c| c == b'%' || c == b'+') {
        return None;
    }
    let b = &v.bytes;
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = View::empty(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push(h * 16 + l, v.span(i, i + 3));
                    i += 3;
                    continue;
                }
                out.push(b'%', v.spans[i]);
            }
            b'+' => out.push(b' ', v.spans[i]),
            c => out.push(c, v.spans[i]),
        }
        i += 1;
    }
    Some(out)
}

/// Replaces every occurrence of the secrets' values (raw, JSON-escaped, URL-encoded, and two
/// layers of those) with `[secret:NAME]`.
pub fn scrub(s: &str, secrets: &[(String, String)]) -> String {
    let secrets: Vec<&(String, String)> = secrets
        .iter()
        .filter(|(_, v)| v.len() >= MIN_SCRUBBED)
        .collect();
    if secrets.is_empty() || s.len() >= u32::MAX as usize {
        return s.to_string();
    }
    let raw = View::raw(s);
    let mut views = Vec::new();
    for first in [json_view(&raw), url_view(&raw)].into_iter().flatten() {
        if let Some(v) = json_view(&first) {
            views.push(v);
        }
        if let Some(v) = url_view(&first) {
            views.push(v);
        }
        views.push(first);
    }
    views.push(raw);
    // (start, end, secret index) of every occurrence in every view
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    for (k, (_, value)) in secrets.iter().enumerate() {
        let finder = memchr::memmem::Finder::new(value.as_bytes());
        for v in &views {
            for at in finder.find_iter(&v.bytes) {
                let (a, b) = v.span(at, at + value.len());
                found.push((a as usize, b as usize, k));
            }
        }
    }
    if found.is_empty() {
        return s.to_string();
    }
    for f in found.iter_mut() {
        while !s.is_char_boundary(f.0) {
            f.0 -= 1;
        }
        while !s.is_char_boundary(f.1) {
            f.1 += 1;
        }
    }
    found.sort();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    let mut i = 0;
    while i < found.len() {
        let (start, mut end, k) = found[i];
        i += 1;
        // overlapping occurrences (of this or another secret, in any view) become one
        while i < found.len() && found[i].0 < end {
            end = end.max(found[i].1);
            i += 1;
        }
        out.push_str(&s[at.min(start)..start]);
        out.push_str(&format!("[secret:{}]", secrets[k].0));
        at = end;
    }
    out.push_str(&s[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sec(v: &str) -> Vec<(String, String)> {
        vec![("k".into(), v.into())]
    }

    /// serde_json's escaping (quotes, backslash, controls; non-ASCII as it is)
    fn json(v: &str) -> String {
        let s = serde_json::to_string(v).unwrap();
        s[1..s.len() - 1].to_string()
    }

    /// PHP's default json_encode: `\/` and `\uXXXX` for everything beyond ASCII
    fn json_ascii(v: &str, upper: bool) -> String {
        let mut out = String::new();
        for c in json(v).chars() {
            if c == '/' {
                out.push_str("\\/");
            } else if c.is_ascii() {
                out.push(c);
            } else {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    });
                }
            }
        }
        out
    }

    /// application/x-www-form-urlencoded (space as +) or plain percent-encoding (space as %20)
    fn url(v: &str, form: bool) -> String {
        let mut out = String::new();
        for &b in v.as_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' if form => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    }

    #[test]
    fn raw_echoes_are_scrubbed_as_before() {
        let s = scrub(
            "authorization: Bearer s3cr3t-value\n{\"k\": \"s3cr3t-value\"}",
            &sec("s3cr3t-value"),
        );
        assert_eq!(
            s,
            "authorization: Bearer [secret:k]\n{\"k\": \"[secret:k]\"}"
        );
        // values shorter than 4 bytes are left alone
        assert_eq!(scrub("a ab abc", &sec("ab")), "a ab abc");
    }

    #[test]
    fn json_escaped_echoes_are_scrubbed() {
        let v = "pa\"ss\\wo/rd-é-😀";
        for enc in [json(v), json_ascii(v, false), json_ascii(v, true)] {
            let text = format!("{{\"authorization\": \"Bearer {enc}\"}}");
            let s = scrub(&text, &sec(v));
            assert_eq!(s, "{\"authorization\": \"Bearer [secret:k]\"}", "{enc}");
        }
    }

    #[test]
    fn url_encoded_echoes_are_scrubbed() {
        let v = "tok en/+&=é%41";
        for enc in [
            url(v, true),
            url(v, false),
            url(v, false).to_lowercase(),
            url(&url(v, false), false),
        ] {
            let text = format!("a=1&auth=Bearer+{enc}&b=2");
            let s = scrub(&text, &sec(v));
            assert_eq!(s, "a=1&auth=Bearer+[secret:k]&b=2", "{enc}");
        }
        // JSON inside a form, a form value inside JSON
        let text = format!("q={}", url(&json("a\"bcdefgh"), true));
        assert_eq!(scrub(&text, &sec("a\"bcdefgh")), "q=[secret:k]");
        let text = format!("{{\"q\": \"{}\"}}", json(&url("a bcdefgh", true)));
        assert_eq!(scrub(&text, &sec("a bcdefgh")), "{\"q\": \"[secret:k]\"}");
    }

    #[test]
    fn other_text_and_broken_escapes_are_kept() {
        let text = "{\"a\": \"\\u00e9 \\\"x\\\" \\uZZZZ \\ud800 %zz %4\"} 100% + more\\";
        assert_eq!(scrub(text, &sec("abcdefgh")), text);
        // several secrets, overlapping matches merged
        let secrets = vec![
            ("a".to_string(), "abcdefgh".to_string()),
            ("b".to_string(), "efghijkl".to_string()),
        ];
        assert_eq!(
            scrub("x abcdefghijkl y efghijkl", &secrets),
            "x [secret:a] y [secret:b]"
        );
    }

    proptest! {
        #[test]
        fn every_encoding_is_scrubbed(
            v in "\\PC{4,24}",
            pre in "[a-zA-Z0-9 {}:,\"=&]{0,16}",
            post in "[a-zA-Z0-9 {}:,\"=&]{0,16}",
            which in 0usize..9,
        ) {
            let enc = match which {
                0 => v.clone(),
                1 => json(&v),
                2 => json_ascii(&v, false),
                3 => json_ascii(&v, true),
                4 => url(&v, true),
                5 => url(&v, false),
                6 => url(&json(&v), true),
                7 => json(&url(&v, true)),
                _ => url(&url(&v, false), false),
            };
            prop_assume!(!"[secret:k]".contains(&v));
            let text = format!("{pre}{enc}{post}");
            let s = scrub(&text, &sec(&v));
            prop_assert!(!s.contains(&enc), "{} in {}", enc, s);
            prop_assert!(!s.contains(&v), "{} in {}", v, s);
            prop_assert!(s.contains("[secret:k]"));
        }

        #[test]
        fn text_without_the_secret_is_unchanged(text in "[^Xx58]{0,64}", extra in "[a-z]{0,3}") {
            prop_assert_eq!(scrub(&text, &sec("XXXXXXXX")), text.clone());
            // no secrets, or only short ones: unchanged, whatever the text
            prop_assert_eq!(scrub(&text, &[]), text.clone());
            prop_assert_eq!(scrub(&text, &sec(&extra)), text);
        }

        #[test]
        fn never_panics(text in "\\PC{0,64}", v in "\\PC{0,8}") {
            let _ = scrub(&text, &sec(&v));
        }
    }
}
