//! The value of an argument of a pg_cron command, as far as it is known before the job runs
//! (pure): constants, casts to text, integer and JSON types, `||`, `jsonb_build_object` /
//! `jsonb_build_array` and `current_setting('app.x')`, which stays a marked piece of text
//! ([`Piece::Setting`]) that `super::command` turns into a placeholder.

use super::command::Expr;
use serde_json::{Map, Number, Value};

type R<T> = Result<T, String>;

/// A piece of text: written in the command, or a setting's value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Piece {
    Lit(String),
    Setting(String),
}

/// The value of an argument, as far as it is known before the job runs.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Val {
    /// Text (an untyped literal too), possibly with settings in it.
    Text(Vec<Piece>),
    Int(i64),
    Json(Value),
    Null,
}

/// Marks a setting inside JSON built from text (a character no command text holds: PostgreSQL
/// text cannot contain NUL).
pub(super) const SETTING_MARK: char = '\u{0}';

pub(super) fn pieces_of(s: &str) -> Vec<Piece> {
    // "\0name\0" is a setting, the rest literal text
    s.split(SETTING_MARK)
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(i, p)| {
            if i % 2 == 1 {
                Piece::Setting(p.to_string())
            } else {
                Piece::Lit(p.to_string())
            }
        })
        .collect()
}

pub(super) fn marked(p: &[Piece]) -> String {
    p.iter()
        .map(|p| match p {
            Piece::Lit(s) => s.clone(),
            Piece::Setting(n) => format!("{SETTING_MARK}{n}{SETTING_MARK}"),
        })
        .collect()
}

pub(super) fn lit(p: &[Piece]) -> Option<String> {
    p.iter()
        .map(|p| match p {
            Piece::Lit(s) => Some(s.as_str()),
            Piece::Setting(_) => None,
        })
        .collect()
}

pub(super) fn has_setting(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains(SETTING_MARK),
        Value::Array(a) => a.iter().any(has_setting),
        Value::Object(m) => m.values().any(has_setting),
        _ => false,
    }
}

/// A value as JSON (a literal text is parsed, as `'...'::jsonb` would be).
pub(super) fn to_json(v: Val, what: &str) -> R<Value> {
    match v {
        Val::Json(j) => Ok(j),
        Val::Null => Ok(Value::Null),
        Val::Int(n) => Ok(Value::from(n)),
        Val::Text(p) => {
            let s = lit(&p)
                .ok_or_else(|| format!("{what} is text with a setting in it, cast to JSON"))?;
            let j: Value =
                serde_json::from_str(&s).map_err(|e| format!("{what} is not valid JSON ({e})"))?;
            if has_setting(&j) {
                return Err(format!("{what} holds \\u0000, which jsonb refuses"));
            }
            Ok(j)
        }
    }
}

/// A value inside `jsonb_build_object` / `jsonb_build_array`.
pub(super) fn json_value(v: Val) -> Value {
    match v {
        Val::Json(j) => j,
        Val::Null => Value::Null,
        Val::Int(n) => Value::from(n),
        Val::Text(p) => Value::String(marked(&p)),
    }
}

pub(super) fn text_of(v: Val, what: &str) -> R<Vec<Piece>> {
    match v {
        Val::Text(p) => Ok(p),
        Val::Int(n) => Ok(vec![Piece::Lit(n.to_string())]),
        Val::Json(_) => Err(format!("{what} is JSON used as text")),
        Val::Null => Err(format!("{what} is NULL")),
    }
}

pub(super) fn eval(e: &Expr) -> R<Val> {
    match e {
        Expr::Str(s) => Ok(Val::Text(vec![Piece::Lit(s.clone())])),
        Expr::Int(n) => Ok(Val::Int(*n)),
        Expr::Num(s) => s
            .parse::<Number>()
            .map(|n| Val::Json(Value::Number(n)))
            .map_err(|_| format!("the number {s} is out of JSON's range")),
        Expr::Bool(b) => Ok(Val::Json(Value::Bool(*b))),
        Expr::Null => Ok(Val::Null),
        Expr::Cast(a, t) => {
            let v = eval(a)?;
            match t.as_str() {
                "jsonb" | "json" => Ok(Val::Json(to_json(v, "a JSON value")?)),
                "text" | "varchar" | "bpchar" => Ok(Val::Text(text_of(v, "a value")?)),
                "int2" | "int4" | "int8" | "integer" | "int" | "bigint" | "smallint" => match v {
                    Val::Int(n) => Ok(Val::Int(n)),
                    Val::Text(p) => lit(&p)
                        .and_then(|s| s.trim().parse().ok())
                        .map(Val::Int)
                        .ok_or_else(|| "a cast to an integer of what is not a number".into()),
                    _ => Err("a cast to an integer of what is not a number".into()),
                },
                other => Err(format!("a cast to {other}")),
            }
        }
        Expr::Op(op, a, b) if op == "||" => {
            // an untyped literal next to JSON is read as JSON; typed text next to JSON makes
            // PostgreSQL concatenate text, which is not followed here
            let untyped = |e: &Expr| matches!(e, Expr::Str(_));
            let (ua, ub) = (untyped(a), untyped(b));
            let (a, b) = (eval(a)?, eval(b)?);
            match (a, b) {
                (Val::Json(_), Val::Text(_)) if !ub => Err("|| of JSON and typed text".into()),
                (Val::Text(_), Val::Json(_)) if !ua => Err("|| of typed text and JSON".into()),
                (a @ Val::Json(_), b) | (a, b @ Val::Json(_)) => {
                    // jsonb || jsonb: the right's keys win
                    match (to_json(a, "a JSON value")?, to_json(b, "a JSON value")?) {
                        (Value::Object(mut x), Value::Object(y)) => {
                            x.extend(y);
                            Ok(Val::Json(Value::Object(x)))
                        }
                        _ => Err("|| of JSON values that are not both objects".into()),
                    }
                }
                (Val::Null, _) | (_, Val::Null) => Err("|| with NULL (the result is NULL)".into()),
                (a, b) => {
                    let mut p = text_of(a, "a value")?;
                    p.extend(text_of(b, "a value")?);
                    Ok(Val::Text(p))
                }
            }
        }
        Expr::Op(op, ..) => Err(format!("the operator {op}")),
        Expr::Call { name, args } => call(name, args),
        Expr::Other(what) => Err(what.clone()),
    }
}

pub(super) fn call(name: &[String], args: &[(Option<String>, Expr)]) -> R<Val> {
    let f = match name {
        [s, f] if s == "pg_catalog" => f.as_str(),
        [f] => f.as_str(),
        _ => return Err(format!("a call of {}()", name.join("."))),
    };
    if args.iter().any(|(n, _)| n.is_some()) && f != "current_setting" {
        return Err(format!("named arguments to {f}()"));
    }
    match f {
        "current_setting" => {
            let v: Vec<Val> = args.iter().map(|(_, e)| eval(e)).collect::<R<_>>()?;
            let setting = match v.first() {
                Some(Val::Text(p)) => lit(p),
                _ => None,
            }
            .ok_or_else(|| "current_setting() of what is not a constant name".to_string())?;
            if v.len() > 2 {
                return Err("current_setting() with more than two arguments".into());
            }
            if !crate::http::template::valid_setting_name(&setting) {
                return Err(format!(
                    "current_setting('{setting}'): pg_pulse fills in only dotted settings such as app.settings.key"
                ));
            }
            Ok(Val::Text(vec![Piece::Setting(
                setting.to_ascii_lowercase(),
            )]))
        }
        "jsonb_build_object" | "json_build_object" => {
            if !args.len().is_multiple_of(2) {
                return Err(format!("{f}() with an odd number of arguments"));
            }
            let mut o = Map::new();
            for pair in args.chunks(2) {
                let key = match eval(&pair[0].1)? {
                    Val::Text(p) => {
                        lit(&p).ok_or("a key of jsonb_build_object() reads a setting")?
                    }
                    Val::Int(n) => n.to_string(),
                    _ => return Err(format!("a key of {f}() that is not text")),
                };
                o.insert(key, json_value(eval(&pair[1].1)?));
            }
            Ok(Val::Json(Value::Object(o)))
        }
        "jsonb_build_array" | "json_build_array" => Ok(Val::Json(Value::Array(
            args.iter()
                .map(|(_, e)| eval(e).map(json_value))
                .collect::<R<_>>()?,
        ))),
        other => Err(format!("a call of {other}()")),
    }
}
