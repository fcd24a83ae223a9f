//! A pg_cron command through PostgreSQL's own parser (`raw_parser`: grammar only, no catalog
//! lookups, nothing runs), read into the pure [`Stmt`] / [`Expr`] that `super::command`
//! translates. Node kinds it does not know become `Expr::Other` with a description.

use super::command::{Expr, Stmt};
use pgrx::pg_sys;
use std::ffi::CStr;

/// The statements of `command`, or the parser's error message.
pub(super) fn statements(command: &str) -> Result<Vec<Stmt>, String> {
    let Ok(text) = std::ffi::CString::new(command) else {
        return Err("it contains a NUL character".into());
    };
    // a syntax error is an ERROR: caught in a subtransaction, its message kept; the parse tree
    // lives in a memory context of its own, freed once it is read (a command of megabytes makes
    // a tree of hundreds)
    crate::xact::try_subxact(|| {
        scratch(|| unsafe {
            let list = pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
            nodes(list)
                .into_iter()
                .map(|raw| {
                    let raw = raw as *mut pg_sys::RawStmt;
                    stmt((*raw).stmt)
                })
                .collect()
        })
    })
    .map_err(|(_, m)| m)
}

/// Runs `f` with a memory context of its own as the current one, deleted afterwards (also when
/// `f` fails): what PostgreSQL allocates for it does not outlive it.
pub(super) fn scratch<R>(f: impl FnOnce() -> R) -> R {
    let mut cx = pgrx::PgMemoryContexts::new("pg_pulse import_pg_cron");
    // SAFETY: f returns Rust values only; nothing allocated in the context is kept
    unsafe { cx.switch_to(|_| f()) }
}

unsafe fn nodes(list: *mut pg_sys::List) -> Vec<*mut pg_sys::Node> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node)
        .collect()
}

unsafe fn tag(n: *mut pg_sys::Node) -> pg_sys::NodeTag {
    if n.is_null() {
        pg_sys::NodeTag::T_Invalid
    } else {
        (*n).type_
    }
}

unsafe fn cstr(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

/// A list of `String` nodes (a qualified name), in lower case as the parser keeps them.
unsafe fn names(list: *mut pg_sys::List) -> Vec<String> {
    nodes(list)
        .into_iter()
        .map(|n| {
            if tag(n) == pg_sys::NodeTag::T_String {
                cstr((*(n as *mut pg_sys::String)).sval)
            } else {
                "*".to_string()
            }
        })
        .collect()
}

unsafe fn stmt(n: *mut pg_sys::Node) -> Stmt {
    match tag(n) {
        pg_sys::NodeTag::T_SelectStmt => {
            let s = n as *mut pg_sys::SelectStmt;
            let targets: Vec<Expr> = nodes((*s).targetList)
                .into_iter()
                .map(|t| {
                    if tag(t) == pg_sys::NodeTag::T_ResTarget {
                        expr((*(t as *mut pg_sys::ResTarget)).val)
                    } else {
                        Expr::Other("a target of another kind".into())
                    }
                })
                .collect();
            let plain = (*s).op == pg_sys::SetOperation::SETOP_NONE
                && (*s).distinctClause.is_null()
                && (*s).intoClause.is_null()
                && (*s).fromClause.is_null()
                && (*s).whereClause.is_null()
                && (*s).groupClause.is_null()
                && (*s).havingClause.is_null()
                && (*s).windowClause.is_null()
                && (*s).valuesLists.is_null()
                && (*s).sortClause.is_null()
                && (*s).limitOffset.is_null()
                && (*s).limitCount.is_null()
                && (*s).lockingClause.is_null()
                && (*s).withClause.is_null();
            if plain {
                return Stmt::Select(targets);
            }
            // what the FROM clause calls counts too (SELECT * FROM trigger_x())
            let mut calls = targets;
            for f in nodes((*s).fromClause) {
                if tag(f) == pg_sys::NodeTag::T_RangeFunction {
                    for pair in nodes((*(f as *mut pg_sys::RangeFunction)).functions) {
                        if let Some(&call) = nodes(pair as *mut pg_sys::List).first() {
                            calls.push(expr(call));
                        }
                    }
                }
            }
            Stmt::Other {
                kind: "a SELECT with more than a target list".into(),
                calls,
            }
        }
        pg_sys::NodeTag::T_CallStmt => {
            let c = n as *mut pg_sys::CallStmt;
            Stmt::Other {
                kind: "CALL".into(),
                calls: vec![expr((*c).funccall as *mut pg_sys::Node)],
            }
        }
        pg_sys::NodeTag::T_DoStmt => Stmt::Other {
            kind: "a DO block".into(),
            calls: Vec::new(),
        },
        other => Stmt::Other {
            kind: format!(
                "a {} statement",
                format!("{other:?}")
                    .trim_start_matches("T_")
                    .trim_end_matches("Stmt")
            ),
            calls: Vec::new(),
        },
    }
}

/// How deep an expression is read: deeper ones (`'a' || 'a' || ...` thousands of times, which the
/// parser builds without recursing) are `Other`, so that no recursion here or in
/// `super::command` can exhaust the stack.
const MAX_DEPTH: usize = 100;

unsafe fn expr(n: *mut pg_sys::Node) -> Expr {
    expr_at(n, 0)
}

unsafe fn expr_at(n: *mut pg_sys::Node, depth: usize) -> Expr {
    if depth > MAX_DEPTH {
        return Expr::Other("an expression nested too deeply".into());
    }
    let expr = |n| expr_at(n, depth + 1);
    match tag(n) {
        pg_sys::NodeTag::T_A_Const => {
            let c = n as *mut pg_sys::A_Const;
            if (*c).isnull {
                return Expr::Null;
            }
            let v = &(*c).val;
            match v.node.type_ {
                pg_sys::NodeTag::T_Integer => Expr::Int(v.ival.ival as i64),
                pg_sys::NodeTag::T_Float => Expr::Num(cstr(v.fval.fval)),
                pg_sys::NodeTag::T_Boolean => Expr::Bool(v.boolval.boolval),
                pg_sys::NodeTag::T_String => Expr::Str(cstr(v.sval.sval)),
                _ => Expr::Other("a bit string".into()),
            }
        }
        pg_sys::NodeTag::T_TypeCast => {
            let c = n as *mut pg_sys::TypeCast;
            let t = (*c).typeName;
            if t.is_null() || !(*t).arrayBounds.is_null() {
                return Expr::Other("a cast to an array type".into());
            }
            if !(*t).typmods.is_null() {
                // varchar(16) cuts the value: not followed here
                return Expr::Other("a cast with a length or precision".into());
            }
            let name = names((*t).names).pop().unwrap_or_default();
            Expr::Cast(Box::new(expr((*c).arg)), name)
        }
        pg_sys::NodeTag::T_A_Expr => {
            let e = n as *mut pg_sys::A_Expr;
            let op = names((*e).name).join(".");
            if (*e).kind != pg_sys::A_Expr_Kind::AEXPR_OP
                || (*e).lexpr.is_null()
                || (*e).rexpr.is_null()
            {
                return Expr::Other(format!("the expression {op}"));
            }
            Expr::Op(op, Box::new(expr((*e).lexpr)), Box::new(expr((*e).rexpr)))
        }
        pg_sys::NodeTag::T_FuncCall => {
            let f = n as *mut pg_sys::FuncCall;
            let name = names((*f).funcname);
            if !(*f).agg_order.is_null()
                || !(*f).agg_filter.is_null()
                || !(*f).over.is_null()
                || (*f).agg_star
                || (*f).agg_distinct
                || (*f).func_variadic
            {
                return Expr::Other(format!(
                    "an aggregate or variadic call of {}",
                    name.join(".")
                ));
            }
            let args = nodes((*f).args)
                .into_iter()
                .map(|a| {
                    if tag(a) == pg_sys::NodeTag::T_NamedArgExpr {
                        let na = a as *mut pg_sys::NamedArgExpr;
                        (Some(cstr((*na).name)), expr((*na).arg as *mut pg_sys::Node))
                    } else {
                        (None, expr(a))
                    }
                })
                .collect();
            Expr::Call { name, args }
        }
        pg_sys::NodeTag::T_ColumnRef => {
            Expr::Other("a column reference (known only when the job runs)".into())
        }
        pg_sys::NodeTag::T_ParamRef => {
            Expr::Other("a parameter (known only when the job runs)".into())
        }
        pg_sys::NodeTag::T_SQLValueFunction => {
            Expr::Other("CURRENT_DATE or the like (known only when the job runs)".into())
        }
        pg_sys::NodeTag::T_SubLink => {
            Expr::Other("a subquery (known only when the job runs)".into())
        }
        _ => Expr::Other("an expression".into()),
    }
}
