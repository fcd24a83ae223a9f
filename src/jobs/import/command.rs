//! What a pg_cron command becomes (pure): the statements PostgreSQL's parser found in it (built
//! by `super::parse` from the raw parse tree) are read here. A command that is exactly one call
//! of `net.http_post`, `net.http_get` or `net.http_delete` whose arguments are constants,
//! `'...'::jsonb`, `jsonb_build_object(...)`, `current_setting('app.x')` and `||` becomes an
//! HTTP request as `pulse.http_request` describes one, with `{{setting:app.x}}` (or
//! `{{secret:x}}`) placeholders where the command read a setting, sending what pg_net would have
//! sent. Any other command stays SQL; what it calls is listed for the notes.

use super::value::{eval, has_setting, lit, pieces_of, to_json, Piece, Val, SETTING_MARK};
use serde_json::{Map, Value};

/// An expression of the command, as far as the translation needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Str(String),
    Int(i64),
    /// A numeric constant, as written.
    Num(String),
    Bool(bool),
    Null,
    /// `expr::type`, the type's last name in lower case.
    Cast(Box<Expr>, String),
    /// A binary operator (`||`).
    Op(String, Box<Expr>, Box<Expr>),
    /// A function call: its (qualified) name in lower case, its arguments with their names.
    Call {
        name: Vec<String>,
        args: Vec<(Option<String>, Expr)>,
    },
    /// Anything else, described for a note ("a column reference").
    Other(String),
}

/// A statement of the command.
#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `SELECT a, b` with nothing else (no FROM, WHERE, ...).
    Select(Vec<Expr>),
    /// Any other statement (its kind, e.g. "a SELECT with a FROM clause", "VACUUM"), with the
    /// calls found in it.
    Other { kind: String, calls: Vec<Expr> },
}

/// A setting the request reads, and whether it is sent as a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingUse {
    pub setting: String,
    /// The secret it becomes (`Some`: it is in `settings_as_secrets`).
    pub secret: Option<String>,
}

/// What a command becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Translation {
    /// An HTTP job: the request (`pulse.http_request`'s JSON) and the settings it reads.
    Http {
        function: String,
        request: Value,
        settings: Vec<SettingUse>,
    },
    /// A SQL job, with why it is not an HTTP job.
    Sql { why: String },
}

/// The secret a setting becomes: the part of its name after the last dot
/// (`app.settings.service_role_key` -> `service_role_key`).
pub fn secret_name(setting: &str) -> String {
    setting.rsplit('.').next().unwrap_or(setting).to_string()
}

/// The net.http_* calls in the statements, and the other functions they call (their names as
/// written, each once, in order).
pub fn calls(stmts: &[Stmt]) -> (usize, Vec<Vec<String>>) {
    fn walk(e: &Expr, net: &mut usize, other: &mut Vec<Vec<String>>) {
        match e {
            Expr::Call { name, args } => {
                if net_function(name).is_some() {
                    *net += 1;
                } else if !other.contains(name) {
                    other.push(name.clone());
                }
                for (_, a) in args {
                    walk(a, net, other);
                }
            }
            Expr::Cast(a, _) => walk(a, net, other),
            Expr::Op(_, a, b) => {
                walk(a, net, other);
                walk(b, net, other);
            }
            _ => {}
        }
    }
    let (mut net, mut other) = (0, Vec::new());
    for s in stmts {
        let exprs = match s {
            Stmt::Select(t) => t,
            Stmt::Other { calls, .. } => calls,
        };
        for e in exprs {
            walk(e, &mut net, &mut other);
        }
    }
    (net, other)
}

/// `net.http_post` -> "http_post" (pg_net's three request functions, schema-qualified as
/// pg_cron commands write them, or not).
fn net_function(name: &[String]) -> Option<&'static str> {
    let f = match name {
        [s, f] if s == "net" => f.as_str(),
        [f] => f.as_str(),
        _ => return None,
    };
    ["http_post", "http_get", "http_delete"]
        .into_iter()
        .find(|n| *n == f)
}

/// Reads a command's statements. `as_secret(setting)`: whether the setting is to be sent as a
/// secret.
pub fn translate(stmts: &[Stmt], as_secret: &dyn Fn(&str) -> bool) -> Translation {
    let sql = |why: String| Translation::Sql { why };
    let [Stmt::Select(targets)] = stmts else {
        return sql(match stmts.len() {
            0 => "it is empty".into(),
            1 => "it is not a SELECT of one call".into(),
            n => format!("it has {n} statements"),
        });
    };
    let [Expr::Call { name, args }] = targets.as_slice() else {
        return sql("it does not select exactly one function call".into());
    };
    let Some(function) = net_function(name) else {
        return sql(format!("it calls {}(), not net.http_*", name.join(".")));
    };
    match http_request(function, args, as_secret) {
        Ok((request, settings)) => Translation::Http {
            function: format!("net.{function}"),
            request,
            settings,
        },
        Err(why) => sql(format!("net.{function}: {why}")),
    }
}

type R<T> = Result<T, String>;

/// pg_net's parameters, in order, for each function.
fn parameters(function: &str) -> &'static [&'static str] {
    match function {
        "http_post" => &["url", "body", "params", "headers", "timeout_milliseconds"],
        "http_get" => &["url", "params", "headers", "timeout_milliseconds"],
        _ => &["url", "params", "headers", "timeout_milliseconds", "body"],
    }
}

fn http_request(
    function: &str,
    args: &[(Option<String>, Expr)],
    as_secret: &dyn Fn(&str) -> bool,
) -> R<(Value, Vec<SettingUse>)> {
    let names = parameters(function);
    let mut given: Vec<Option<Val>> = vec![None; names.len()];
    for (i, (name, e)) in args.iter().enumerate() {
        let at = match name {
            None => {
                if args[..i].iter().any(|(n, _)| n.is_some()) {
                    return Err("a positional argument follows a named one".into());
                }
                i
            }
            Some(n) => names
                .iter()
                .position(|p| p == n)
                .ok_or_else(|| format!("it has no parameter \"{n}\""))?,
        };
        if at >= names.len() {
            return Err(format!("it takes at most {} arguments", names.len()));
        }
        if given[at].is_some() {
            return Err(format!("\"{}\" is given twice", names[at]));
        }
        given[at] = Some(eval(e)?);
    }
    let arg = |n: &str| {
        names
            .iter()
            .position(|p| *p == n)
            .and_then(|i| given[i].clone())
    };
    let mut settings = Vec::new();

    let url = match arg("url") {
        Some(Val::Text(p)) => template(&p, "the URL", as_secret, &mut settings)?,
        Some(Val::Null) | None => return Err("it has no URL".into()),
        Some(_) => return Err("the URL is not text".into()),
    };
    let mut headers = match arg("headers") {
        None => Map::new(),
        Some(v) => text_map(v, "headers")?,
    };
    for v in headers.values_mut() {
        let Value::String(s) = v else { unreachable!() };
        *s = template(&pieces_of(s), "a header", as_secret, &mut settings)?;
    }
    if function == "http_post" {
        // pg_net adds this header when it is missing, and refuses any other content type
        match headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            None => {
                headers.insert("Content-Type".into(), "application/json".into());
            }
            Some((_, v)) if v.as_str() == Some("application/json") => {}
            Some(_) => {
                return Err(
                    "pg_net refuses a Content-Type other than application/json (the job fails in pg_cron as it is)"
                        .into(),
                )
            }
        }
    }
    let params = match arg("params") {
        None => Map::new(),
        Some(v) => text_map(v, "params")?,
    };
    if params
        .values()
        .any(|v| v.as_str().is_some_and(|s| s.contains(SETTING_MARK)))
    {
        return Err("its params read a setting (pg_pulse sends params as they are)".into());
    }
    let (body, body_template) = match arg("body") {
        None if function == "http_post" => (Some(Value::Object(Map::new())), false),
        None | Some(Val::Null) => (None, false),
        Some(v) => {
            let j = to_json(v, "the body")?;
            let templated = has_setting(&j);
            (
                Some(if templated {
                    json_templates(&j, as_secret, &mut settings)?
                } else {
                    j
                }),
                templated,
            )
        }
    };
    let timeout_ms = match arg("timeout_milliseconds") {
        None => 5000,
        Some(Val::Int(n)) if n > 0 => n,
        Some(Val::Text(p)) => match lit(&p).and_then(|s| s.trim().parse::<i64>().ok()) {
            Some(n) if n > 0 => n,
            _ => return Err("timeout_milliseconds is not a positive number".into()),
        },
        Some(_) => return Err("timeout_milliseconds is not a positive number".into()),
    };
    let mut o = Map::new();
    o.insert(
        "method".into(),
        Value::String(function.trim_start_matches("http_").to_ascii_uppercase()),
    );
    o.insert("url".into(), Value::String(url));
    o.insert("headers".into(), Value::Object(headers));
    if !params.is_empty() {
        o.insert("params".into(), Value::Object(params));
    }
    if let Some(b) = body {
        o.insert("body".into(), b);
    }
    o.insert("timeout_ms".into(), Value::from(timeout_ms));
    if body_template {
        o.insert("body_template".into(), Value::Bool(true));
    }
    Ok((Value::Object(o), settings))
}

/// Text with settings as a pg_pulse template. Literal text must not hold `{{`, which pg_pulse
/// would read as a placeholder.
fn template(
    p: &[Piece],
    what: &str,
    as_secret: &dyn Fn(&str) -> bool,
    settings: &mut Vec<SettingUse>,
) -> R<String> {
    use crate::http::template::{self as t, Part};
    let mut out = String::new();
    let mut parts: Vec<Part> = Vec::new();
    for piece in p {
        match piece {
            Piece::Lit(s) => {
                out.push_str(s);
                match parts.last_mut() {
                    Some(Part::Text(x)) => x.push_str(s),
                    _ => parts.push(Part::Text(s.clone())),
                }
            }
            Piece::Setting(n) => {
                let secret = as_secret(n).then(|| secret_name(n));
                match &secret {
                    Some(s) => {
                        out.push_str(&format!("{{{{secret:{s}}}}}"));
                        parts.push(Part::Secret(s.clone()));
                    }
                    None => {
                        out.push_str(&format!("{{{{setting:{n}}}}}"));
                        parts.push(Part::Setting(n.clone()));
                    }
                }
                let u = SettingUse {
                    setting: n.clone(),
                    secret,
                };
                if !settings.contains(&u) {
                    settings.push(u);
                }
            }
        }
    }
    if parts.is_empty() {
        parts.push(Part::Text(String::new()));
    }
    // pg_pulse must read back exactly these pieces: literal text that contains `{{`, alone or
    // with its neighbours, would be read as a placeholder
    if t::parse(&out).as_ref() != Ok(&parts) {
        return Err(format!(
            "{what} contains {{{{, which pg_pulse would read as a placeholder"
        ));
    }
    Ok(out)
}

/// The body's strings as templates (the body is then marked `body_template`).
fn json_templates(
    v: &Value,
    as_secret: &dyn Fn(&str) -> bool,
    settings: &mut Vec<SettingUse>,
) -> R<Value> {
    Ok(match v {
        Value::String(s) => {
            Value::String(template(&pieces_of(s), "the body", as_secret, settings)?)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| json_templates(x, as_secret, settings))
                .collect::<R<_>>()?,
        ),
        Value::Object(m) => {
            let mut o = Map::new();
            for (k, x) in m {
                o.insert(k.clone(), json_templates(x, as_secret, settings)?);
            }
            Value::Object(o)
        }
        other => other.clone(),
    })
}

/// A JSON object of text values (headers, params), as pg_net reads them (`jsonb_each_text`).
fn text_map(v: Val, what: &str) -> R<Map<String, Value>> {
    let Value::Object(m) = to_json(v, what)? else {
        return Err(format!("{what} is not a JSON object"));
    };
    m.into_iter()
        .map(|(k, v)| {
            if k.contains(SETTING_MARK) {
                return Err(format!("a name in {what} reads a setting"));
            }
            let t = match v {
                Value::String(s) => s,
                Value::Null => return Err(format!("{what} has a null value")),
                other => other.to_string(),
            };
            Ok((k, Value::String(t)))
        })
        .collect()
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
