//! Payload filters in the Common Expression Language (`{"cel": "data.amount > 1000"}`),
//! evaluated with the `cel` crate. An expression is compiled once when it is read (a peer
//! saved, a peers snapshot loaded; the same source is compiled once a process), never per
//! event, and its cost is bounded before it is kept: at most [`MAX_SOURCE`] bytes, brackets
//! at most [`MAX_NESTING`] deep, at most [`MAX_NODES`] nodes once its macros are expanded;
//! of the macros only those that answer a bool (`all`, `exists`, `exists_one`), at most
//! [`MAX_LOOPS`], not nested, whose bodies read only the element; `matches` only with a
//! literal pattern of at most [`MAX_PATTERN`] bytes and outside a macro's body; `+` only
//! with a literal on one side (so nothing grows with the data); and `data` only for events
//! of at most [`MAX_DATA`] bytes. So one evaluation reads an event a bounded number of
//! times, whatever its data.
//!
//! An expression sees each of the event's context attributes as a variable of its name
//! (`type`, `source`, `subject`, extensions), typed as JSON has them, the federation
//! extensions (`kitefedorigin`, `kitefedchain` a list, `kitefedhops`), and `data`: the JSON
//! body (bytes for a body that is not JSON). Integers are `int`, other numbers `double`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::{Context, Env, Program, Value};

/// The longest expression, in bytes.
pub const MAX_SOURCE: usize = 1024;
/// The deepest nesting of brackets in an expression's source.
pub const MAX_NESTING: usize = 32;
/// The most nodes of an expression, its macros expanded.
pub const MAX_NODES: usize = 128;
/// The most macros (`all`, `exists`, `exists_one`) in an expression.
pub const MAX_LOOPS: usize = 2;
/// The longest pattern `matches` takes, in bytes.
pub const MAX_PATTERN: usize = 256;
/// The largest event whose `data` expressions read (a larger one's attributes only).
pub const MAX_DATA: usize = 64 * 1024;

/// The standard environment, built once: every expression is compiled with it and every
/// event's context refers to it.
static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(Env::stdlib()));

/// A CEL expression with its compiled program, or why it cannot be one.
#[derive(Clone)]
pub struct Cel {
    source: String,
    program: Result<Arc<Program>, String>,
}

impl Cel {
    /// Compiles `source` within the bounds; an expression out of them is kept with the
    /// reason, which [`Cel::problem`] answers (a filter list holding one is refused).
    pub fn compile(source: String) -> Self {
        let program = compiled(&source);
        Self { source, program }
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Why the expression cannot be used (None: it can).
    pub fn problem(&self) -> Option<&str> {
        self.program.as_ref().err().map(String::as_str)
    }

    /// Evaluates the expression in an event's context: true or false, or why it could not
    /// answer a bool (a missing field, a type it cannot compare, ...).
    pub fn eval(&self, ctx: &Context<'static, 'static>) -> Result<bool, String> {
        let program = self.program.as_ref().map_err(Clone::clone)?;
        match program.execute(ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "the expression answered a {}, not a bool",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl PartialEq for Cel {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Cel {}

impl std::fmt::Debug for Cel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cel({:?})", self.source)
    }
}

impl serde::Serialize for Cel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for Cel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Cel::compile)
    }
}

/// Programs compiled in this process, by source: a peers snapshot reloads often, and its
/// expressions rarely change. At most 4,096 kept (then it starts over).
fn compiled(source: &str) -> Result<Arc<Program>, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    type Cache = Mutex<HashMap<String, Result<Arc<Program>, String>>>;
    static CACHE: LazyLock<Cache> = LazyLock::new(Default::default);
    if let Some(hit) = CACHE.lock().ok().and_then(|c| c.get(source).cloned()) {
        return hit;
    }
    let made = compile(source).map(Arc::new);
    if let Ok(mut c) = CACHE.lock() {
        if c.len() >= 4096 {
            c.clear();
        }
        c.insert(source.to_owned(), made.clone());
    }
    made
}

fn compile(source: &str) -> Result<Program, String> {
    if source.len() > MAX_SOURCE {
        return Err(format!("at most {MAX_SOURCE} bytes"));
    }
    if source.trim().is_empty() {
        return Err("an empty expression".into());
    }
    // Bounded before the parser sees it, which descends once a bracket.
    let mut depth = 0usize;
    for b in source.bytes() {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(format!("brackets nested more than {MAX_NESTING} deep"));
        }
    }
    let program = ENV.compile(source).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("a syntax error").trim();
        format!("does not compile: {first}")
    })?;
    let mut budget = Budget::default();
    bounded(program.expression(), None, 0, &mut budget)?;
    Ok(program)
}

/// What an expression has spent of its bounds so far.
#[derive(Default)]
struct Budget {
    nodes: usize,
    loops: usize,
}

/// A literal string's text, if the node is one.
fn literal_text(e: &cel::IdedExpr) -> Option<&str> {
    match &e.expr {
        Expr::Literal(cel::common::ast::LiteralValue::String(s)) => Some(s.inner()),
        _ => None,
    }
}

/// The variables a comprehension's body may read: its element (and index) and accumulator.
type Scope<'a> = Option<[Option<&'a str>; 3]>;

/// Checks one node and those below it: the node count, the depth, and the macros.
fn bounded(
    e: &cel::IdedExpr,
    scope: Scope<'_>,
    depth: usize,
    budget: &mut Budget,
) -> Result<(), String> {
    budget.nodes += 1;
    if budget.nodes > MAX_NODES {
        return Err(format!("more than {MAX_NODES} nodes"));
    }
    if depth > 2 * MAX_NESTING {
        return Err(format!("nested more than {} deep", 2 * MAX_NESTING));
    }
    let next = |x: &cel::IdedExpr, b: &mut Budget| bounded(x, scope, depth + 1, b);
    match &e.expr {
        Expr::Ident(name) => match scope {
            Some(vars) if !vars.contains(&Some(name.as_str())) => Err(format!(
                "the body of all, exists or exists_one reads only its element, not {name:?}"
            )),
            _ => Ok(()),
        },
        Expr::Call(c) => {
            if c.func_name == "matches" {
                let pattern = c
                    .args
                    .last()
                    .and_then(literal_text)
                    .ok_or("matches takes a literal pattern (a string in the expression)")?;
                if scope.is_some() {
                    return Err(
                        "matches inside a macro's body (it compiles once an element)".into(),
                    );
                }
                if pattern.len() > MAX_PATTERN {
                    return Err(format!("a matches pattern is at most {MAX_PATTERN} bytes"));
                }
                regex::RegexBuilder::new(pattern)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("matches: {e}"))?;
            }
            if c.func_name == cel::common::ast::operators::ADD
                && !c.args.iter().any(|a| matches!(a.expr, Expr::Literal(_)))
            {
                return Err(
                    "+ takes a literal on one side (its result would grow with the data)".into(),
                );
            }
            if let Some(t) = &c.target {
                next(t, budget)?;
            }
            c.args.iter().try_for_each(|a| next(a, budget))
        }
        Expr::Select(s) => next(&s.operand, budget),
        Expr::List(l) => l.elements.iter().try_for_each(|x| next(x, budget)),
        Expr::Map(m) => m.entries.iter().try_for_each(|x| match &x.expr {
            EntryExpr::MapEntry(me) => {
                next(&me.key, budget)?;
                next(&me.value, budget)
            }
            EntryExpr::StructField(f) => next(&f.value, budget),
        }),
        Expr::Struct(s) => s.entries.iter().try_for_each(|x| match &x.expr {
            EntryExpr::MapEntry(me) => {
                next(&me.key, budget)?;
                next(&me.value, budget)
            }
            EntryExpr::StructField(f) => next(&f.value, budget),
        }),
        Expr::Comprehension(c) => {
            if scope.is_some() {
                return Err("a macro inside a macro's body (its cost would multiply)".into());
            }
            budget.loops += 1;
            if budget.loops > MAX_LOOPS {
                return Err(format!(
                    "more than {MAX_LOOPS} of all, exists and exists_one"
                ));
            }
            if matches!(c.accu_init.expr, Expr::List(_) | Expr::Map(_)) {
                return Err(
                    "map and filter build a value as large as the data: use all, exists or \
                     exists_one"
                        .into(),
                );
            }
            next(&c.iter_range, budget)?;
            next(&c.accu_init, budget)?;
            let inner = Some([
                Some(c.iter_var.as_str()),
                c.iter_var2.as_deref(),
                Some(c.accu_var.as_str()),
            ]);
            for part in [&c.loop_cond, &c.loop_step, &c.result] {
                bounded(part, inner, depth + 1, budget)?;
            }
            Ok(())
        }
        Expr::Literal(_) | Expr::Unspecified => Ok(()),
    }
}

/// An event's context for expressions: its top-level members (`data_base64` as `data`, in
/// bytes; no `data` for an event over [`MAX_DATA`]) and the federation extensions given
/// apart (`extensions`). Text that is not a JSON object has no context: every expression
/// errors on it.
pub fn context(
    text: Option<&str>,
    extensions: &[(&'static str, serde_json::Value)],
) -> Result<Context<'static, 'static>, String> {
    let mut ctx = Context::with_env(Arc::clone(&ENV));
    if let Some(text) = text {
        let serde_json::Value::Object(members) =
            serde_json::from_str(text).map_err(|e| format!("the event is not JSON: {e}"))?
        else {
            return Err("the event is not a JSON object".into());
        };
        let with_data = text.len() <= MAX_DATA;
        for (name, v) in members {
            if !with_data && (name == "data" || name == "data_base64") {
                continue;
            }
            if name == "data_base64" {
                if let Some(bytes) = v.as_str().and_then(|_| kite_wire::event::data_bytes(text)) {
                    ctx.add_variable_from_value("data", Value::Bytes(bytes.into()));
                }
                continue;
            }
            ctx.add_variable_from_value(name, value(v));
        }
    }
    for (name, v) in extensions {
        ctx.add_variable_from_value(*name, value(v.clone()));
    }
    Ok(ctx)
}

/// A JSON value as CEL reads it: integers as `int` (or `uint` past its range), other
/// numbers as `double`.
fn value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_u64().map(Value::UInt))
            .unwrap_or_else(|| Value::Float(n.as_f64().unwrap_or(f64::NAN))),
        J::String(s) => Value::String(Arc::new(s)),
        J::Array(a) => Value::List(Arc::new(a.into_iter().map(value).collect())),
        J::Object(o) => Value::from(
            o.into_iter()
                .map(|(k, v)| (k, value(v)))
                .collect::<HashMap<String, Value>>(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context<'static, 'static> {
        context(
            Some(
                r#"{"type":"com.stripe.charge.succeeded","source":"/hooks/default/stripe",
                    "id":"evt_1","subject":"cus_1",
                    "data":{"object":{"amount":1500,"currency":"usd","paid":true,
                            "fee":1.5,"items":[{"price":5},{"price":700}]}}}"#,
            ),
            &[("kitefedhops", serde_json::json!(1))],
        )
        .expect("context")
    }

    fn eval(src: &str) -> Result<bool, String> {
        let c = Cel::compile(src.into());
        if let Some(p) = c.problem() {
            return Err(format!("refused: {p}"));
        }
        c.eval(&ctx())
    }

    #[test]
    fn expressions_read_attributes_and_data() {
        assert_eq!(
            eval(r#"data.object.amount > 1000 && data.object.currency == "usd""#),
            Ok(true)
        );
        assert_eq!(eval("data.object.amount > 2000"), Ok(false));
        assert_eq!(eval(r#"type.endsWith(".succeeded")"#), Ok(true));
        assert_eq!(eval(r#"subject == "cus_1" && kitefedhops == 1"#), Ok(true));
        assert_eq!(eval("data.object.fee < 2"), Ok(true));
        assert_eq!(eval("data.object.items.exists(i, i.price > 500)"), Ok(true));
        assert_eq!(eval("has(data.object.refunded)"), Ok(false));
        assert_eq!(eval(r#"type.matches("^com\\.stripe\\.")"#), Ok(true));
        let missing = eval("data.object.refunded == true").expect_err("errors");
        assert!(missing.contains("refunded"), "{missing}");
        assert!(eval("data.object.amount")
            .expect_err("not a bool")
            .contains("not a bool"));
    }

    #[test]
    fn costly_expressions_are_refused() {
        let refused = |src: &str| eval(src).expect_err("refused");
        assert!(refused(&"x".repeat(MAX_SOURCE + 1)).contains("bytes"));
        assert!(refused(&format!("{}1{}", "(".repeat(40), ")".repeat(40))).contains("nested"));
        assert!(refused("data.object.items.map(i, i.price).size() > 0").contains("map"));
        assert!(refused("data.object.items.filter(i, i.price > 1).size() > 0").contains("map"));
        assert!(
            refused("data.object.items.all(i, i.price < data.object.amount)").contains("element")
        );
        assert!(refused("data.object.items.all(i, [1].exists(j, j == 1))").contains("macro"));
        assert!(refused(&vec!["subject == \"a\""; 40].join(" || ")).contains("nodes"));
        assert!(refused("data.object.amount >").contains("compile"));
        assert!(refused("  ").contains("empty"));
        assert!(refused(r#"type.matches(subject)"#).contains("literal pattern"));
        assert!(
            refused(r#"data.object.items.exists(i, string(i).matches("a"))"#)
                .contains("matches inside")
        );
        assert!(refused("data.object.items + data.object.items == []").contains("literal"));
        assert!(eval(r#"subject + "x" == "cus_1x""#).is_ok());
        assert!(refused(
            "data.object.items.exists(i, i.price > 1) && data.object.items.all(i, i.price > 0) \
             && data.object.items.exists(i, i.price > 2)"
        )
        .contains("more than 2"));
        // Deep unary chains are within the source bound and evaluate without harm.
        let bangs = format!("{}true", "!".repeat(1000));
        let _ = eval(&bangs);
    }
}
