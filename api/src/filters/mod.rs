//! Event filters in the CloudEvents Subscriptions API's dialects: `exact`, `prefix` and
//! `suffix` on one context attribute (extensions included), `all`, `any` and `not` over
//! other filters, and `cel`, an expression over the attributes and the data ([`cel`]). A
//! peer forwards an event only if every one of its filters matches (beside its scopes).
//! Bounded: at most [`MAX_FILTERS`] a list, [`MAX_NODES`] filters in all, [`MAX_DEPTH`]
//! deep, values of at most [`MAX_VALUE`] bytes, at most [`MAX_EXPRESSIONS`] expressions,
//! each within [`cel`]'s bounds.
//!
//! A filter answers match, no match, or an error (an expression that could not answer),
//! as CEL's own operators do: `all` is no match if any is, `any` a match if any is, and
//! otherwise an error among them is theirs; `not` keeps an error. An error never matches,
//! and the story says what it was.

pub mod cel;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The most filters in one list.
pub const MAX_FILTERS: usize = 16;
/// The most filters, nested ones included, in one list.
pub const MAX_NODES: usize = 64;
/// The deepest nesting of `all`, `any` and `not`.
pub const MAX_DEPTH: usize = 8;
/// The longest value an `exact`, `prefix` or `suffix` compares with, in bytes.
pub const MAX_VALUE: usize = 1024;
/// The most expressions (`cel`) in one list.
pub const MAX_EXPRESSIONS: usize = 4;

/// One filter of the CloudEvents Subscriptions API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Filter {
    /// The attribute named equals the value (`{"exact": {"type": "com.stripe.charge.succeeded"}}`:
    /// one attribute name, one string).
    Exact(BTreeMap<String, String>),
    /// The attribute named starts with the value.
    Prefix(BTreeMap<String, String>),
    /// The attribute named ends with the value.
    Suffix(BTreeMap<String, String>),
    /// Every filter of the list matches.
    All(Vec<Filter>),
    /// At least one filter of the list matches.
    Any(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
    /// A Common Expression Language expression over the event's attributes and data that
    /// answers true (`{"cel": "data.object.amount > 1000"}`).
    Cel(cel::Cel),
}

/// The document's schema: one object with exactly one member, the dialect. Written by hand
/// as one object (not a `oneOf` that refers to itself), which every client generator reads;
/// the nested filters of `all`, `any` and `not` are objects of the same shape.
impl utoipa::PartialSchema for Filter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
        let attribute = |what: &str| {
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(format!(
                    "One context attribute's name and the value it {what}"
                )))
                .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
        };
        let nested = || ObjectBuilder::new().schema_type(Type::Object);
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "A filter in a CloudEvents Subscriptions dialect: exactly one of `exact`, \
                 `prefix`, `suffix` (one attribute each), `all`, `any` (lists of filters), \
                 `not` (a filter) or `cel` (a CEL expression over the attributes and `data`)",
            ))
            .property("exact", attribute("equals"))
            .property("prefix", attribute("starts with"))
            .property("suffix", attribute("ends with"))
            .property("all", ArrayBuilder::new().items(nested()))
            .property("any", ArrayBuilder::new().items(nested()))
            .property("not", nested())
            .property(
                "cel",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(cel::MAX_SOURCE)),
            )
            .min_properties(Some(1))
            .max_properties(Some(1))
            .into()
    }
}

impl utoipa::ToSchema for Filter {}

/// A context attribute's name as CloudEvents allows it: 1 to 20 of a-z and 0-9.
fn attribute_name(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl Filter {
    /// Checks the filter at `at` (its place, as an error names it, `filters[0].all[1]`),
    /// counting its nodes into `nodes`; answers what is wrong and where.
    fn check(&self, at: &str, depth: usize, nodes: &mut usize) -> Result<(), String> {
        *nodes += 1;
        if *nodes > MAX_NODES {
            return Err(format!("{at}: more than {MAX_NODES} filters in all"));
        }
        if depth > MAX_DEPTH {
            return Err(format!("{at}: nested more than {MAX_DEPTH} deep"));
        }
        match self {
            Filter::Exact(m) | Filter::Prefix(m) | Filter::Suffix(m) => {
                let dialect = self.dialect();
                let [(name, value)] = m.iter().collect::<Vec<_>>()[..] else {
                    return Err(format!(
                        "{at}.{dialect}: names exactly one attribute, as {{\"type\": \"...\"}}"
                    ));
                };
                if !attribute_name(name) {
                    return Err(format!(
                        "{at}.{dialect}: {name:?} is not an attribute name (1 to 20 of a-z, 0-9)"
                    ));
                }
                if value.len() > MAX_VALUE || value.contains('\0') {
                    return Err(format!(
                        "{at}.{dialect}.{name}: at most {MAX_VALUE} bytes, without NUL"
                    ));
                }
                if value.is_empty() && !matches!(self, Filter::Exact(_)) {
                    return Err(format!(
                        "{at}.{dialect}.{name}: an empty {dialect} matches everything"
                    ));
                }
                Ok(())
            }
            Filter::All(list) | Filter::Any(list) => {
                let dialect = self.dialect();
                if list.is_empty() {
                    return Err(format!("{at}.{dialect}: names at least one filter"));
                }
                for (i, f) in list.iter().enumerate() {
                    f.check(&format!("{at}.{dialect}[{i}]"), depth + 1, nodes)?;
                }
                Ok(())
            }
            Filter::Not(f) => f.check(&format!("{at}.not"), depth + 1, nodes),
            Filter::Cel(c) => match c.problem() {
                Some(p) => Err(format!("{at}.cel: {p}")),
                None => Ok(()),
            },
        }
    }

    /// The dialect's name.
    pub fn dialect(&self) -> &'static str {
        match self {
            Filter::Exact(_) => "exact",
            Filter::Prefix(_) => "prefix",
            Filter::Suffix(_) => "suffix",
            Filter::All(_) => "all",
            Filter::Any(_) => "any",
            Filter::Not(_) => "not",
            Filter::Cel(_) => "cel",
        }
    }

    /// Whether the event matches: an attribute the event does not have matches no `exact`,
    /// `prefix` or `suffix`; an expression that cannot answer is an error.
    pub fn verdict(&self, ev: &mut Facts<'_>) -> Verdict {
        let one = |m: &BTreeMap<String, String>,
                   ev: &mut Facts<'_>,
                   test: &dyn Fn(&str, &str) -> bool| {
            let attrs = ev.attributes();
            Verdict::of(
                m.iter()
                    .all(|(name, want)| attrs.get(name).is_some_and(|have| test(have, want))),
            )
        };
        match self {
            Filter::Exact(m) => one(m, ev, &|have, want| have == want),
            Filter::Prefix(m) => one(m, ev, &|have, want| have.starts_with(want)),
            Filter::Suffix(m) => one(m, ev, &|have, want| have.ends_with(want)),
            Filter::All(list) => {
                let mut error = None;
                for f in list {
                    match f.verdict(ev) {
                        Verdict::No => return Verdict::No,
                        Verdict::Error(e) => error = error.or(Some(e)),
                        Verdict::Yes => {}
                    }
                }
                error.map_or(Verdict::Yes, Verdict::Error)
            }
            Filter::Any(list) => {
                let mut error = None;
                for f in list {
                    match f.verdict(ev) {
                        Verdict::Yes => return Verdict::Yes,
                        Verdict::Error(e) => error = error.or(Some(e)),
                        Verdict::No => {}
                    }
                }
                error.map_or(Verdict::No, Verdict::Error)
            }
            Filter::Not(f) => match f.verdict(ev) {
                Verdict::Yes => Verdict::No,
                Verdict::No => Verdict::Yes,
                e @ Verdict::Error(_) => e,
            },
            Filter::Cel(c) => match ev.cel_context() {
                Ok(ctx) => match c.eval(ctx) {
                    Ok(b) => Verdict::of(b),
                    Err(e) => Verdict::Error(e),
                },
                Err(e) => Verdict::Error(e.to_owned()),
            },
        }
    }

    /// Whether the filter, or one inside it, is an expression (it then reads the data).
    pub fn reads_data(&self) -> bool {
        self.expressions() > 0
    }

    /// How many expressions (`cel`) it holds, itself included.
    fn expressions(&self) -> usize {
        match self {
            Filter::Cel(_) => 1,
            Filter::All(l) | Filter::Any(l) => l.iter().map(Filter::expressions).sum(),
            Filter::Not(f) => f.expressions(),
            Filter::Exact(_) | Filter::Prefix(_) | Filter::Suffix(_) => 0,
        }
    }
}

/// What a filter answers for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It matches.
    Yes,
    /// It does not.
    No,
    /// An expression could not answer (why): not a match.
    Error(String),
}

impl Verdict {
    fn of(b: bool) -> Self {
        if b {
            Verdict::Yes
        } else {
            Verdict::No
        }
    }
}

/// The first filter of a list an event does not match: its place, and the error that kept
/// it from matching when an expression could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The filter's place in the list.
    pub at: usize,
    /// Why an expression did not answer (None: it, or the filter, answered no).
    pub error: Option<String>,
}

/// An event as filters read it: its text (None: not read; only the extensions given
/// apart are then known), parsed into attributes when a dialect first asks and into an
/// expression context when an expression first asks, each once however many filters read
/// it.
pub struct Facts<'a> {
    text: Option<&'a str>,
    extensions: Vec<(&'static str, serde_json::Value)>,
    attributes: Option<HashMap<String, String>>,
    context: Option<Result<::cel::Context<'static, 'static>, String>>,
}

impl<'a> Facts<'a> {
    /// The event with this text (a structured CloudEvent's JSON; None: not read).
    pub fn new(text: Option<&'a str>) -> Self {
        Self {
            text,
            extensions: Vec::new(),
            attributes: None,
            context: None,
        }
    }

    /// With an extension the text does not carry (the federation extensions, which are
    /// stored apart from it): attributes read it as text (a list or object as its JSON).
    pub fn with(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.extensions.push((name, value));
        self
    }

    /// One context attribute's value as filters read it (None: the event has none).
    pub fn attribute(&mut self, name: &str) -> Option<&str> {
        self.attributes().get(name).map(String::as_str)
    }

    fn attributes(&mut self) -> &HashMap<String, String> {
        let (text, extensions) = (self.text, &self.extensions);
        self.attributes.get_or_insert_with(|| {
            let mut map = text.map(attributes).unwrap_or_default();
            for (name, v) in extensions {
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                map.insert((*name).to_owned(), text);
            }
            map
        })
    }

    fn cel_context(&mut self) -> Result<&::cel::Context<'static, 'static>, &str> {
        let (text, extensions) = (self.text, &self.extensions);
        self.context
            .get_or_insert_with(|| cel::context(text, extensions))
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Reads a list of filters (`field`, a JSON array): at most [`MAX_FILTERS`], each in a
/// dialect kite knows and within bounds; a refusal names the place (`filters[1].any[0]`).
pub fn read(field: &str, v: &serde_json::Value) -> Result<Vec<Filter>, String> {
    let serde_json::Value::Array(items) = v else {
        return Err(format!("{field} must be an array of filters"));
    };
    if items.len() > MAX_FILTERS {
        return Err(format!("{field} holds at most {MAX_FILTERS} filters"));
    }
    let mut out = Vec::with_capacity(items.len());
    let mut nodes = 0;
    for (i, item) in items.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let f: Filter = serde_json::from_value(item.clone()).map_err(|_| {
            format!(
                "{at}: a filter is one of {{\"exact\"|\"prefix\"|\"suffix\": {{\"ATTRIBUTE\": \"VALUE\"}}}}, \
                 {{\"all\"|\"any\": [FILTER, ...]}} or {{\"not\": FILTER}}"
            )
        })?;
        f.check(&at, 1, &mut nodes)?;
        out.push(f);
    }
    if out.iter().map(Filter::expressions).sum::<usize>() > MAX_EXPRESSIONS {
        return Err(format!(
            "{field} holds at most {MAX_EXPRESSIONS} cel expressions"
        ));
    }
    Ok(out)
}

/// One filter written as JSON (a command line's `--filter`), checked as the API checks it.
pub fn from_json(s: &str) -> Result<Filter, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not JSON ({e})"))?;
    let mut one = read("filter", &serde_json::Value::Array(vec![v]))?;
    one.pop().ok_or_else(|| "no filter".to_owned())
}

/// Whether every filter of `filters` matches the event; answers the first that does not.
pub fn first_mismatch(filters: &[Filter], ev: &mut Facts<'_>) -> Option<Mismatch> {
    filters
        .iter()
        .enumerate()
        .find_map(|(at, f)| match f.verdict(ev) {
            Verdict::Yes => None,
            Verdict::No => Some(Mismatch { at, error: None }),
            Verdict::Error(e) => Some(Mismatch { at, error: Some(e) }),
        })
}

/// A structured CloudEvent's context attributes as filters read them: every top-level
/// member but `data` and `data_base64` whose value is a string, a number or a boolean (as
/// text). Only the top level is parsed (the data is skipped over, never built); text that is
/// not a JSON object has none.
pub fn attributes(event: &str) -> HashMap<String, String> {
    let Ok(members) = serde_json::from_str::<HashMap<String, &serde_json::value::RawValue>>(event)
    else {
        return HashMap::new();
    };
    members
        .into_iter()
        .filter(|(k, _)| k != "data" && k != "data_base64")
        .filter_map(|(k, raw)| match serde_json::from_str(raw.get()).ok()? {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const EVENT: &str = r#"{"type":"com.stripe.charge.succeeded","source":"/hooks/default/stripe",
                "subject":"cus_1","kitefedorigin":"instance-a","data":{"subject":"no","n":3}}"#;

    fn miss(filters: &[Filter]) -> Option<usize> {
        first_mismatch(filters, &mut Facts::new(Some(EVENT))).map(|m| m.at)
    }

    #[test]
    fn each_dialect_matches_as_the_subscriptions_api_says() {
        let f = |v| read("filters", &v).expect("valid");
        let yes = f(json!([
            {"exact": {"type": "com.stripe.charge.succeeded"}},
            {"prefix": {"source": "/hooks/"}},
            {"suffix": {"type": ".succeeded"}},
            {"any": [{"exact": {"subject": "cus_2"}}, {"exact": {"kitefedorigin": "instance-a"}}]},
            {"all": [{"prefix": {"subject": "cus_"}}]},
            {"not": {"exact": {"type": "com.stripe.charge.refunded"}}}
        ]));
        assert_eq!(miss(&yes), None);
        let no = f(json!([{"prefix": {"source": "/x"}}, {"exact": {"dataschema": "x"}}]));
        assert_eq!(miss(&no), Some(0));
        let missing = f(json!([{"suffix": {"dataschema": "x"}}]));
        assert_eq!(
            miss(&missing),
            Some(0),
            "a missing attribute matches nothing"
        );
    }

    #[test]
    fn an_expression_that_errors_matches_nowhere_and_says_why() {
        let f = |v| read("filters", &v).expect("valid");
        assert_eq!(
            miss(&f(json!([{"cel": "data.n == 3 && subject == 'cus_1'"}]))),
            None
        );
        let err = f(json!([{"exact": {"subject": "cus_1"}}, {"cel": "data.missing > 1"}]));
        let m = first_mismatch(&err, &mut Facts::new(Some(EVENT))).expect("no match");
        assert_eq!(m.at, 1);
        assert!(m.error.expect("an error").contains("missing"));
        // CEL's own logic: an error under `not` stays one; `any` takes a match over it.
        assert_eq!(
            miss(&f(json!([{"not": {"cel": "data.missing > 1"}}]))),
            Some(0)
        );
        assert_eq!(
            miss(&f(
                json!([{"any": [{"cel": "data.missing > 1"}, {"cel": "data.n > 1"}]}])
            )),
            None
        );
        assert_eq!(
            miss(&f(
                json!([{"all": [{"cel": "data.missing > 1"}, {"cel": "data.n > 5"}]}])
            )),
            Some(0)
        );
    }

    #[test]
    fn a_bad_filter_is_refused_naming_its_place() {
        let err = |v| read("filters", &v).expect_err("refused");
        assert!(err(json!({"exact": {}})).contains("array"));
        assert!(
            err(json!([{"exact": {"type": "a", "source": "b"}}])).starts_with("filters[0].exact")
        );
        assert!(
            err(json!([{"all": [{"exact": {"type": "a"}}, {"like": {"type": "a"}}]}]))
                .starts_with("filters[0]")
        );
        assert!(err(json!([{"any": [{"prefix": {"Type": "a"}}]}]))
            .starts_with("filters[0].any[0].prefix"));
        assert!(err(json!([{"prefix": {"type": ""}}])).contains("matches everything"));
        assert!(err(json!([{"cel": "data.x >"}])).starts_with("filters[0].cel: does not compile"));
        assert!(err(json!([{"cel": 3}])).starts_with("filters[0]"));
        let mut deep = json!({"exact": {"type": "a"}});
        for _ in 0..10 {
            deep = json!({"not": deep});
        }
        assert!(err(json!([deep])).contains("deep"));
        let many: Vec<_> = (0..17).map(|_| json!({"exact": {"type": "a"}})).collect();
        assert!(err(json!(many)).contains("at most 16"));
    }
}
