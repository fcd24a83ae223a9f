//! Tests of what the log hook masks (`crate::http::redact`).
use super::*;
use proptest::prelude::*;
use proptest::sample::select;

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

#[test]
fn set_secret_in_comments_literals_or_other_names_does_not_count() {
    for st in [
        "UPDATE pulse.job SET comment='evil-audit-hidden-data' WHERE job_name='x' -- set_secret",
        "SELECT 'evil' FROM nothere /* set_secret */",
        "SELECT 1 /* a /* nested */ set_secret('k', 'v') */",
        "SELECT 'set_secret(''k'', ''v'')'",
        "SELECT E'\\' set_secret(', $q$ set_secret( $q$, U&'set_secret('",
        "SELECT $$ DO $x$ set_secret( $x$ $$",
        "UPDATE t SET set_secret = 1, \"set_secret\" = 2, x = \"pulse.set_secret\"(3)",
        "SELECT \"SET_SECRET\"('k', 'v'), my_set_secret('k', 'v'), set_secrets('k', 'v')",
        "SELECT pulse.set_secret_from_file('k', '/x') -- set_secret(",
        "CREATE TABLE t AS SELECT $$ set_secret('k', 'v') $$",
        "DO $$ BEGIN PERFORM 'set_secret(''k'', ''v'')'; END $$",
        "PREPARE p AS SELECT 1; EXECUTE p('set_secret(')",
    ] {
        assert!(!sets_secret(st.as_bytes()), "{st}");
    }
}

#[test]
fn real_calls_count_however_written() {
    for st in [
        "SELECT pulse.set_secret('k', 'v')",
        "select * from PULSE . SET_SECRET /* c */ ( 'k', 'v')",
        "SELECT \"pulse\".\"set_secret\"('k', 'v')",
        "SELECT U&\"set\\005fsecret\"('k', 'v')",
        "SELECT 1; -- set_secret\nSELECT set_secret(name => 'k', value => 'v')",
        "DO $$ BEGIN PERFORM pulse.set_secret('k', 'v'); END $$",
        "DO LANGUAGE plpgsql 'BEGIN PERFORM pulse.set_secret(''k'', ''v''); END'",
        "CREATE OR REPLACE FUNCTION f() RETURNS void LANGUAGE sql AS $b$ SELECT pulse.set_secret('k', 'v') $b$",
        "SELECT 1; do $$ begin execute 'x'; perform set_secret('k', 'v'); end $$",
        "DO $$ BEGIN EXECUTE 'SELECT pulse.set_secret(''k'', ''v'')'; END $$",
        "DO $$ BEGIN EXECUTE format('SELECT pulse.set_secret(%L, %L)', 'k', 'v'); END $$",
    ] {
        assert!(sets_secret(st.as_bytes()), "{st}");
    }
}

#[test]
fn decoded_values_are_masked() {
    let msg = |v: &str| format!("invalid input syntax for type integer: \"{v}\"");
    for (st, v) in [
        (
            r"SELECT pulse.set_secret('k1', E'\x4cEAKTEST-B-0002'::int)",
            "LEAKTEST-B-0002",
        ),
        (
            r"SELECT pulse.set_secret('k1', U&'\004cEAKTEST-C-0003'::int)",
            "LEAKTEST-C-0003",
        ),
        (
            r"SELECT pulse.set_secret('k1', U&'!004cEAK!+000054EST' UESCAPE '!')",
            "LEAKTEST",
        ),
        (
            r"SELECT pulse.set_secret('k1', E'\114\105AK\u0054\U00000045ST\n\t\\\'x')",
            "LEAKTEST\n\t\\'x",
        ),
        (
            r"SELECT pulse.set_secret('k1', ('LEAK' || E'TE\x53' || 'T-D')::int)",
            "LEAKTEST-D",
        ),
        (
            "SELECT pulse.set_secret('k1', ('LEAK'\n 'TEST-E')::int)",
            "LEAKTEST-E",
        ),
        (
            "SELECT pulse.set_secret('k1', $v$LEAK'TEST-F$v$::int)",
            "LEAK'TEST-F",
        ),
        (
            r"SELECT pulse.set_secret('k1', convert_from('\x4c45414b54455354', 'UTF8'))",
            "LEAKTEST",
        ),
        (
            r"DO 'BEGIN PERFORM pulse.set_secret(''k'', E''\x4cEAKTEST-G''); END'",
            "LEAKTEST-G",
        ),
        // standard_conforming_strings = off
        (
            r"SELECT pulse.set_secret('k1', '\x4cEAKTEST-H')",
            "LEAKTEST-H",
        ),
    ] {
        assert!(sets_secret(st.as_bytes()), "{st}");
        let m = masked(&msg(v), st);
        assert!(!m.contains(v) && m.contains("\"***"), "{st}: {m}");
    }
}

/// `v` written as one SQL literal, each byte in a form picked by `how`.
fn encode(v: &str, form: u8, how: &[u8]) -> String {
    let pick = |i: usize| how.get(i).copied().unwrap_or(0);
    match form % 5 {
        0 => format!("'{v}'"),
        1 => {
            let body: String = v
                .chars()
                .enumerate()
                .map(|(i, c)| match pick(i) % 5 {
                    0 => c.to_string(),
                    1 => format!("\\x{:02x}", c as u32),
                    2 => format!("\\{:03o}", c as u32),
                    3 => format!("\\u{:04X}", c as u32),
                    _ => format!("\\U{:08x}", c as u32),
                })
                .collect();
            format!("E'{body}'")
        }
        2 => {
            let body: String = v
                .chars()
                .enumerate()
                .map(|(i, c)| match pick(i) % 3 {
                    0 => c.to_string(),
                    1 => format!("\\{:04x}", c as u32),
                    _ => format!("\\+{:06X}", c as u32),
                })
                .collect();
            format!("U&'{body}'")
        }
        3 => format!("$tag${v}$tag$"),
        _ => {
            // pieces joined by ||
            let cut = 1 + pick(0) as usize % (v.len() - 1);
            format!("'{}' || E'{}'", &v[..cut], &v[cut..])
        }
    }
}

proptest! {
    #[test]
    fn comments_and_literals_never_count(
        a in "[a-zA-Z_ (),.]{0,10}",
        b in "[a-zA-Z_ (),.]{0,10}",
        name in "(pulse\\.)?(set_secret|SET_SECRET|Set_Secret)",
        wrap in 0u8..8,
    ) {
        let x = format!("{a}{name}({b}");
        let hidden = match wrap {
            0 => format!("-- {x}\n"),
            1 => format!("/* {x} /* {x} */ {x} */"),
            2 => format!("'{x}'"),
            3 => format!("E'{x}\\' {x}'"),
            4 => format!("$q${x}$q$"),
            5 => format!("U&'{x}'"),
            6 => format!("\"{a}{name}{b}\"({x})").replace('(', "").replace(')', ""),
            _ => format!("$$ DO $x$ {x} $x$ $$"),
        };
        let st = format!("UPDATE pulse.job SET comment = 'evil' WHERE job_name = 'x' AND {hidden} IS NOT NULL");
        prop_assert!(!sets_secret(st.as_bytes()), "{}", st);
    }

    #[test]
    fn real_calls_always_count(
        name in select(vec!["set_secret", "SET_SECRET", "Set_Secret", "\"set_secret\""]),
        schema in select(vec!["", "pulse.", "PULSE . ", "\"pulse\"."]),
        gap in select(vec!["", " ", "\n", "/* c */", "-- c\n"]),
        before in select(vec!["", "SELECT 1; ", "-- set_secret\n", "/* x */ ", "SELECT 'set_secret(' || 'x'; "]),
        how in 0u8..4,
    ) {
        let call = format!("{schema}{name}{gap}('k', 'eightbytes')");
        let st = match how {
            0 => format!("{before}SELECT {call}"),
            1 => format!("{before}SELECT * FROM {call}"),
            2 => format!("{before}DO $$ BEGIN PERFORM {call}; END $$"),
            _ => format!("{before}SELECT x, {call} AS y FROM t"),
        };
        prop_assert!(sets_secret(st.as_bytes()), "{}", st);
    }

    #[test]
    fn encoded_values_never_survive(
        v in "[A-Za-z0-9 -]{8,24}",
        form in 0u8..5,
        how in proptest::collection::vec(any::<u8>(), 24),
    ) {
        let lit = encode(&v, form, &how);
        let st = format!("SELECT pulse.set_secret('k', ({lit})::int)");
        prop_assert!(sets_secret(st.as_bytes()), "{}", st);
        for field in [
            format!("invalid input syntax for type integer: \"{v}\""),
            format!("statement: {st}"),
            format!("x{v}x"),
        ] {
            let m = masked(&field, &st);
            prop_assert!(!m.contains(&v), "{} -> {}", st, m);
            prop_assert_eq!(m.len(), field.len());
        }
    }
}
