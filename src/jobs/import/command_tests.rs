use super::*;
use serde_json::json;

fn s(x: &str) -> Expr {
    Expr::Str(x.into())
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Call {
        name: name.split('.').map(String::from).collect(),
        args: args.into_iter().map(|a| (None, a)).collect(),
    }
}

fn named(name: &str, args: Vec<(&str, Expr)>) -> Expr {
    Expr::Call {
        name: name.split('.').map(String::from).collect(),
        args: args
            .into_iter()
            .map(|(n, a)| (Some(n.to_string()), a))
            .collect(),
    }
}

fn cat(a: Expr, b: Expr) -> Expr {
    Expr::Op("||".into(), Box::new(a), Box::new(b))
}

fn cast(a: Expr, t: &str) -> Expr {
    Expr::Cast(Box::new(a), t.into())
}

fn setting(n: &str) -> Expr {
    call("current_setting", vec![s(n)])
}

fn none(_: &str) -> bool {
    false
}

fn http(stmts: &[Stmt], secret: &dyn Fn(&str) -> bool) -> (Value, Vec<SettingUse>) {
    match translate(stmts, secret) {
        Translation::Http {
            request, settings, ..
        } => (request, settings),
        other => panic!("not HTTP: {other:?}"),
    }
}

fn why(stmts: &[Stmt]) -> String {
    match translate(stmts, &none) {
        Translation::Sql { why } => why,
        other => panic!("not SQL: {other:?}"),
    }
}

/// The playbooks' shape: named arguments, a URL from a setting, a bearer key from a setting.
#[test]
fn a_supabase_edge_function_call_becomes_an_http_job() {
    let cmd = [Stmt::Select(vec![named(
        "net.http_post",
        vec![
            (
                "url",
                cat(
                    setting("app.settings.supabase_url"),
                    s("/functions/v1/ingest"),
                ),
            ),
            (
                "headers",
                call(
                    "jsonb_build_object",
                    vec![
                        s("Authorization"),
                        cat(s("Bearer "), setting("app.settings.service_role_key")),
                    ],
                ),
            ),
            (
                "body",
                call("jsonb_build_object", vec![s("batch_size"), Expr::Int(20)]),
            ),
            ("timeout_milliseconds", Expr::Int(60000)),
        ],
    )])];
    let (req, settings) = http(&cmd, &|n| n == "app.settings.service_role_key");
    assert_eq!(
        req,
        json!({
            "method": "POST",
            "url": "{{setting:app.settings.supabase_url}}/functions/v1/ingest",
            "headers": {"Authorization": "Bearer {{secret:service_role_key}}",
                        "Content-Type": "application/json"},
            "body": {"batch_size": 20},
            "timeout_ms": 60000
        })
    );
    assert_eq!(
        settings,
        vec![
            SettingUse {
                setting: "app.settings.supabase_url".into(),
                secret: None
            },
            SettingUse {
                setting: "app.settings.service_role_key".into(),
                secret: Some("service_role_key".into())
            },
        ]
    );
}

#[test]
fn positional_arguments_follow_pg_nets_order_and_defaults() {
    // http_get(url, params, headers, timeout_milliseconds)
    let get = [Stmt::Select(vec![call(
        "net.http_get",
        vec![s("https://x/items"), cast(s(r#"{"page": 2}"#), "jsonb")],
    )])];
    assert_eq!(
        http(&get, &none).0,
        json!({"method": "GET", "url": "https://x/items", "headers": {},
               "params": {"page": "2"}, "timeout_ms": 5000})
    );
    // http_post(url, body, params, headers, timeout): no body -> {}, JSON content type added
    let post = [Stmt::Select(vec![call(
        "net.http_post",
        vec![s("https://x/hook")],
    )])];
    assert_eq!(
        http(&post, &none).0,
        json!({"method": "POST", "url": "https://x/hook",
               "headers": {"Content-Type": "application/json"}, "body": {}, "timeout_ms": 5000})
    );
    // http_delete(url, params, headers, timeout, body): no body by default
    let del = [Stmt::Select(vec![call(
        "net.http_delete",
        vec![
            s("https://x/items/7"),
            Expr::Null,
            cast(s(r#"{"X-A": "b"}"#), "jsonb"),
        ],
    )])];
    assert_eq!(
        why(&del),
        "net.http_delete: params is not a JSON object",
        "NULL params: pg_net's SQL fails on it too"
    );
    let del = [Stmt::Select(vec![call(
        "net.http_delete",
        vec![
            s("https://x/items/7"),
            s("{}"),
            cast(s(r#"{"X-A": "b"}"#), "jsonb"),
        ],
    )])];
    assert_eq!(
        http(&del, &none).0,
        json!({"method": "DELETE", "url": "https://x/items/7", "headers": {"X-A": "b"},
               "timeout_ms": 5000})
    );
}

#[test]
fn a_setting_in_the_body_makes_it_a_template_and_json_merges_as_jsonb_does() {
    let body = cat(
        cast(s(r#"{"a": 1, "k": "old"}"#), "jsonb"),
        call("jsonb_build_object", vec![s("k"), setting("app.key")]),
    );
    let cmd = [Stmt::Select(vec![named(
        "net.http_post",
        vec![("url", s("https://x/")), ("body", body)],
    )])];
    let (req, _) = http(&cmd, &none);
    assert_eq!(req["body"], json!({"a": 1, "k": "{{setting:app.key}}"}));
    assert_eq!(req["body_template"], json!(true));
}

#[test]
fn what_is_known_only_at_run_time_keeps_the_command_sql() {
    let now = [Stmt::Select(vec![named(
        "net.http_post",
        vec![
            ("url", s("https://x/")),
            (
                "body",
                call("jsonb_build_object", vec![s("at"), call("now", vec![])]),
            ),
        ],
    )])];
    assert_eq!(why(&now), "net.http_post: a call of now()");
    let col = [Stmt::Select(vec![call(
        "net.http_get",
        vec![cat(
            s("https://x/"),
            Expr::Other("a column reference".into()),
        )],
    )])];
    assert!(why(&col).contains("a column reference"), "{}", why(&col));
    // literal {{ in a template part would be read as a placeholder by pg_pulse
    let braces = [Stmt::Select(vec![call(
        "net.http_get",
        vec![s("https://x/{{a}}")],
    )])];
    assert!(why(&braces).contains("{{"), "{}", why(&braces));
    // text with a setting cast to JSON cannot be a template
    let glued = [Stmt::Select(vec![named(
        "net.http_post",
        vec![
            ("url", s("https://x/")),
            (
                "body",
                cast(
                    cat(s("{\"k\": \""), cat(setting("app.k"), s("\"}"))),
                    "jsonb",
                ),
            ),
        ],
    )])];
    assert!(why(&glued).contains("setting"), "{}", why(&glued));
    // pg_net refuses other content types: the job fails in pg_cron already
    let xml = [Stmt::Select(vec![named(
        "net.http_post",
        vec![
            ("url", s("https://x/")),
            (
                "headers",
                cast(s(r#"{"content-type": "text/xml"}"#), "jsonb"),
            ),
        ],
    )])];
    assert!(why(&xml).contains("Content-Type"));
    assert!(why(&[Stmt::Select(vec![named(
        "net.http_get",
        vec![("url", s("https://x/")), ("nope", Expr::Int(1))]
    )])])
    .contains("no parameter \"nope\""));
}

#[test]
fn several_statements_or_other_calls_stay_sql_and_are_counted() {
    let one = named("net.http_post", vec![("url", s("https://x/a"))]);
    let two = [
        Stmt::Select(vec![one.clone()]),
        Stmt::Select(vec![one.clone()]),
    ];
    assert_eq!(why(&two), "it has 2 statements");
    assert_eq!(calls(&two), (2, vec![]));
    let helper = [Stmt::Select(vec![call("trigger_sweeper", vec![])])];
    assert_eq!(why(&helper), "it calls trigger_sweeper(), not net.http_*");
    assert_eq!(
        calls(&helper),
        (0, vec![vec!["trigger_sweeper".to_string()]])
    );
    let vacuum = [Stmt::Other {
        kind: "VACUUM".into(),
        calls: vec![],
    }];
    assert_eq!(why(&vacuum), "it is not a SELECT of one call");
    let nested = [Stmt::Other {
        kind: "a SELECT with a FROM clause".into(),
        calls: vec![call("public.refresh", vec![one.clone()])],
    }];
    assert_eq!(
        calls(&nested),
        (1, vec![vec!["public".into(), "refresh".into()]])
    );
}

#[test]
fn secret_names_are_the_last_part_of_the_setting() {
    assert_eq!(
        secret_name("app.settings.service_role_key"),
        "service_role_key"
    );
    assert_eq!(secret_name("app.key"), "key");
}

/// Found in review: pieces that only together make `{{`, and text (typed) next to JSON, which
/// PostgreSQL concatenates as text.
#[test]
fn braces_split_over_pieces_and_typed_text_next_to_json_keep_the_command_sql() {
    let split = [Stmt::Select(vec![call(
        "net.http_get",
        vec![cat(
            s("http://127.0.0.1/"),
            cat(s("{"), s("{secret:mtok}}")),
        )],
    )])];
    assert!(why(&split).contains("{{"), "{}", why(&split));
    let before_setting = [Stmt::Select(vec![call(
        "net.http_get",
        vec![cat(s("http://h/{"), setting("app.x"))],
    )])];
    assert!(
        why(&before_setting).contains("{{"),
        "{}",
        why(&before_setting)
    );
    let typed = |a: Expr| {
        [Stmt::Select(vec![named(
            "net.http_post",
            vec![("url", s("https://x/")), ("body", a)],
        )])]
    };
    let text_json = typed(cat(
        cast(s(r#"{"a": 1}"#), "text"),
        cast(s(r#"{"b": 2}"#), "jsonb"),
    ));
    assert!(
        why(&text_json).contains("typed text"),
        "{}",
        why(&text_json)
    );
    let untyped_json = typed(cat(s(r#"{"a": 1}"#), cast(s(r#"{"b": 2}"#), "jsonb")));
    assert_eq!(
        http(&untyped_json, &none).0["body"],
        json!({"a": 1, "b": 2})
    );
}
