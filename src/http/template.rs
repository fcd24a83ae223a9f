//! Request templates: `{{secret:NAME}}`, `{{setting:app.settings.x}}` and the run context
//! (`{{job_name}}`, `{{run_id}}`, `{{scheduled_for}}`, `{{attempt}}`) in what the request's
//! author wrote as a template: the URL and header values, and the body only when it is marked
//! `body_template` (never params, never a body that comes from data). Parsed (and so validated)
//! when a request or job is created, resolved only when a request is sent, never stored resolved.
//! Resolution is bounded ([`render_within`]): the length of the result is computed from the
//! looked-up values before anything is built, so an over-long result is never allocated. Pure Rust.

use std::collections::HashMap;
use std::fmt;

/// A run-context variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    JobName,
    RunId,
    ScheduledFor,
    Attempt,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    Text(String),
    Secret(String),
    Setting(String),
    Context(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub placeholder: String,
    pub reason: &'static str,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid placeholder {{{{{}}}}}: {}",
            self.placeholder, self.reason
        )
    }
}

pub const TEMPLATE_HINT: &str = "Placeholders are {{secret:NAME}}, {{setting:app.settings.name}}, {{job_name}}, {{run_id}}, {{scheduled_for}} and {{attempt}}.";

/// A secret's name: letters, digits, `_` and `-`, at most 128 characters.
pub fn valid_secret_name(s: &str) -> bool {
    valid_name(s, false)
}

/// A setting a `{{setting:...}}` placeholder may name: dotted, letters, digits, `_`, `-`, `.`.
pub fn valid_setting_name(s: &str) -> bool {
    valid_name(s, true) && s.contains('.')
}

fn valid_name(s: &str, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dots && c == '.'))
}

/// Splits a template into parts. Text without `{{` is one text part.
pub fn parse(s: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = s;
    let mut text = String::new();
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(TemplateError {
                placeholder: after.chars().take(40).collect(),
                reason: "it is not closed with }}",
            });
        };
        let inner = after[..end].trim();
        let part = match inner.split_once(':') {
            Some(("secret", name)) if valid_name(name.trim(), false) => {
                Part::Secret(name.trim().to_string())
            }
            Some(("setting", name)) if valid_setting_name(name.trim()) => {
                Part::Setting(name.trim().to_string())
            }
            Some(("secret", _)) => {
                return Err(TemplateError {
                    placeholder: inner.to_string(),
                    reason: "a secret name is letters, digits, _ and - (at most 128)",
                })
            }
            Some(("setting", _)) => {
                return Err(TemplateError {
                    placeholder: inner.to_string(),
                    reason: "a setting is a dotted name such as app.settings.supabase_url",
                })
            }
            Some(_) => {
                return Err(TemplateError {
                    placeholder: inner.to_string(),
                    reason: "unknown kind (use secret: or setting:)",
                })
            }
            None => match inner {
                "job_name" => Part::Context(Var::JobName),
                "run_id" => Part::Context(Var::RunId),
                "scheduled_for" => Part::Context(Var::ScheduledFor),
                "attempt" => Part::Context(Var::Attempt),
                _ => {
                    return Err(TemplateError {
                        placeholder: inner.to_string(),
                        reason: "unknown variable",
                    })
                }
            },
        };
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(part);
        rest = &after[end + 2..];
    }
    text.push_str(rest);
    if !text.is_empty() || parts.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Why a template could not be resolved. It names what is missing, never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Secret(String),
    Setting(String),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Secret(n) => write!(
                f,
                "secret \"{n}\" does not exist (create it with pulse.set_secret('{n}', ...))"
            ),
            Missing::Setting(n) => write!(
                f,
                "setting \"{n}\" is not set (ALTER DATABASE ... SET {n} = '...')"
            ),
        }
    }
}

/// Values a template is resolved against.
pub trait Resolve {
    fn secret(&self, name: &str) -> Option<String>;
    fn setting(&self, name: &str) -> Option<String>;
    fn context(&self, var: Var) -> String;
}

/// Why a template could not be rendered within its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    Missing(Missing),
    /// The result would be `len` bytes (saturating), more than the limit: nothing was built.
    TooLong {
        len: usize,
    },
}

impl From<Missing> for RenderError {
    fn from(m: Missing) -> Self {
        RenderError::Missing(m)
    }
}

/// The value of one placeholder (a text part is its own value).
fn lookup(p: &Part, r: &dyn Resolve) -> Result<String, Missing> {
    Ok(match p {
        Part::Text(t) => t.clone(),
        Part::Secret(n) => r.secret(n).ok_or_else(|| Missing::Secret(n.clone()))?,
        Part::Setting(n) => r
            .setting(n)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Missing::Setting(n.clone()))?,
        Part::Context(v) => r.context(*v),
    })
}

/// Resolves parsed parts into at most `max` bytes. Each distinct placeholder is looked up once;
/// the result's length is summed from the values first, and only a result that fits is built
/// (so `{{secret:big}}` repeated 10,000 times costs one lookup and no allocation beyond `max`).
pub fn render_within(parts: &[Part], r: &dyn Resolve, max: usize) -> Result<String, RenderError> {
    let mut values: HashMap<&Part, String> = HashMap::new();
    let mut len = 0usize;
    for p in parts {
        let n = match p {
            Part::Text(t) => t.len(),
            _ => match values.get(p) {
                Some(v) => v.len(),
                None => {
                    let v = lookup(p, r)?;
                    let n = v.len();
                    values.insert(p, v);
                    n
                }
            },
        };
        len = len.saturating_add(n);
    }
    if len > max {
        return Err(RenderError::TooLong { len });
    }
    let mut out = String::with_capacity(len);
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            _ => out.push_str(&values[p]),
        }
    }
    Ok(out)
}

/// Resolves parsed parts (no limit).
pub fn render(parts: &[Part], r: &dyn Resolve) -> Result<String, Missing> {
    render_within(parts, r, usize::MAX).map_err(|e| match e {
        RenderError::Missing(m) => m,
        RenderError::TooLong { .. } => unreachable!("no result is longer than usize::MAX"),
    })
}

/// The bytes of a template that are not placeholders: the least its result can be.
pub fn literal_len(parts: &[Part]) -> usize {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.len(),
            _ => 0,
        })
        .sum()
}

/// Names of the secrets a template uses.
pub fn secrets(parts: &[Part]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|p| match p {
        Part::Secret(n) => Some(n.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct R;
    impl Resolve for R {
        fn secret(&self, name: &str) -> Option<String> {
            (name == "service_key").then(|| "s3cr3t".to_string())
        }
        fn setting(&self, name: &str) -> Option<String> {
            (name == "app.settings.supabase_url").then(|| "https://x.supabase.co".to_string())
        }
        fn context(&self, v: Var) -> String {
            match v {
                Var::JobName => "nightly".into(),
                Var::RunId => "42".into(),
                Var::ScheduledFor => "2026-11-22T02:00:00Z".into(),
                Var::Attempt => "1".into(),
            }
        }
    }

    #[test]
    fn renders_every_kind() {
        let p = parse("{{setting:app.settings.supabase_url}}/functions/v1/run?job={{job_name}}&run={{ run_id }}").unwrap();
        assert_eq!(
            render(&p, &R).unwrap(),
            "https://x.supabase.co/functions/v1/run?job=nightly&run=42"
        );
        let p = parse("Bearer {{secret:service_key}}").unwrap();
        assert_eq!(render(&p, &R).unwrap(), "Bearer s3cr3t");
        assert_eq!(secrets(&p).collect::<Vec<_>>(), vec!["service_key"]);
        let p = parse("{{scheduled_for}} #{{attempt}}").unwrap();
        assert_eq!(render(&p, &R).unwrap(), "2026-11-22T02:00:00Z #1");
    }

    #[test]
    fn plain_text_and_single_braces_pass_through() {
        for s in ["", "no placeholders", "{\"json\": {\"a\": 1}}", "a } b { c"] {
            assert_eq!(render(&parse(s).unwrap(), &R).unwrap(), s);
        }
    }

    #[test]
    fn missing_values_are_named_not_shown() {
        let e = render(&parse("{{secret:other}}").unwrap(), &R).unwrap_err();
        assert_eq!(e, Missing::Secret("other".into()));
        assert!(e.to_string().contains("\"other\""));
        let e = render(&parse("{{setting:app.settings.nope}}").unwrap(), &R).unwrap_err();
        assert!(e.to_string().contains("app.settings.nope"));
    }

    #[test]
    fn bad_placeholders_are_rejected() {
        for (s, what) in [
            ("{{secret:}}", "secret"),
            ("{{secret:a b}}", "secret"),
            ("{{setting:nodots}}", "setting"),
            ("{{env:HOME}}", "unknown kind"),
            ("{{jobname}}", "unknown variable"),
            ("x {{job_name", "not closed"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(
                e.to_string().contains(what) || e.reason.contains(what),
                "{s}: {e}"
            );
        }
    }

    #[test]
    fn rendering_is_bounded_before_anything_is_built() {
        struct Big(std::cell::Cell<usize>);
        impl Resolve for Big {
            fn secret(&self, _: &str) -> Option<String> {
                self.0.set(self.0.get() + 1);
                Some("x".repeat(65_536))
            }
            fn setting(&self, _: &str) -> Option<String> {
                None
            }
            fn context(&self, _: Var) -> String {
                String::new()
            }
        }
        let r = Big(std::cell::Cell::new(0));
        let p = parse(&"{{secret:big}}".repeat(10_000)).unwrap();
        assert_eq!(
            render_within(&p, &r, 1_048_576).unwrap_err(),
            RenderError::TooLong { len: 655_360_000 }
        );
        // one lookup for the 10,000 uses
        assert_eq!(r.0.get(), 1);
        let p = parse("a{{secret:big}}b").unwrap();
        assert_eq!(render_within(&p, &r, 65_538).unwrap().len(), 65_538);
        assert!(matches!(
            render_within(&p, &r, 65_537),
            Err(RenderError::TooLong { len: 65_538 })
        ));
        // a missing value is reported as such, whatever the limit
        let p = parse("{{setting:app.settings.x}}").unwrap();
        assert!(matches!(
            render_within(&p, &r, 0),
            Err(RenderError::Missing(Missing::Setting(_)))
        ));
        assert_eq!(literal_len(&parse("ab{{secret:big}}cd").unwrap()), 4);
    }

    #[test]
    fn a_value_is_never_expanded_again() {
        struct Braces;
        impl Resolve for Braces {
            fn secret(&self, _: &str) -> Option<String> {
                Some("{{secret:other}} {{x}}".into())
            }
            fn setting(&self, _: &str) -> Option<String> {
                None
            }
            fn context(&self, _: Var) -> String {
                "{{secret:k}}".into()
            }
        }
        let p = parse("{{secret:k}}|{{job_name}}").unwrap();
        assert_eq!(
            render(&p, &Braces).unwrap(),
            "{{secret:other}} {{x}}|{{secret:k}}"
        );
    }

    proptest! {
        #[test]
        fn text_without_braces_is_identity(s in "[^{}]{0,80}") {
            prop_assert_eq!(render(&parse(&s).unwrap(), &R).unwrap(), s);
        }

        #[test]
        fn parse_never_panics(s in ".{0,80}") {
            let _ = parse(&s);
        }
    }
}
