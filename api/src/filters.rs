//! Event filters in the CloudEvents Subscriptions API's dialects: `exact`, `prefix` and
//! `suffix` on one context attribute (extensions included), and `all`, `any` and `not` over
//! other filters. A peer forwards an event only if every one of its filters matches (beside
//! its scopes). Bounded: at most [`MAX_FILTERS`] a list, [`MAX_NODES`] filters in all,
//! [`MAX_DEPTH`] deep, values of at most [`MAX_VALUE`] bytes.

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
                 `prefix`, `suffix` (one attribute each), `all`, `any` (lists of filters) or \
                 `not` (a filter)",
            ))
            .property("exact", attribute("equals"))
            .property("prefix", attribute("starts with"))
            .property("suffix", attribute("ends with"))
            .property("all", ArrayBuilder::new().items(nested()))
            .property("any", ArrayBuilder::new().items(nested()))
            .property("not", nested())
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
        }
    }

    /// Whether an event with these context attributes ([`attributes`]) matches: an
    /// attribute the event does not have matches no `exact`, `prefix` or `suffix`.
    pub fn matches(&self, attrs: &HashMap<String, String>) -> bool {
        let one = |m: &BTreeMap<String, String>, test: &dyn Fn(&str, &str) -> bool| {
            m.iter()
                .all(|(name, want)| attrs.get(name).is_some_and(|have| test(have, want)))
        };
        match self {
            Filter::Exact(m) => one(m, &|have, want| have == want),
            Filter::Prefix(m) => one(m, &|have, want| have.starts_with(want)),
            Filter::Suffix(m) => one(m, &|have, want| have.ends_with(want)),
            Filter::All(list) => list.iter().all(|f| f.matches(attrs)),
            Filter::Any(list) => list.iter().any(|f| f.matches(attrs)),
            Filter::Not(f) => !f.matches(attrs),
        }
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
    Ok(out)
}

/// One filter written as JSON (a command line's `--filter`), checked as the API checks it.
pub fn from_json(s: &str) -> Result<Filter, String> {
    let v: serde_json::Value = serde_json::from_str(s).map_err(|e| format!("not JSON ({e})"))?;
    let mut one = read("filter", &serde_json::Value::Array(vec![v]))?;
    one.pop().ok_or_else(|| "no filter".to_owned())
}

/// Whether every filter of `filters` matches; answers the first that does not, by place.
pub fn first_mismatch(filters: &[Filter], attrs: &HashMap<String, String>) -> Option<usize> {
    filters.iter().position(|f| !f.matches(attrs))
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

    fn attrs() -> HashMap<String, String> {
        attributes(
            r#"{"type":"com.stripe.charge.succeeded","source":"/hooks/default/stripe",
                "subject":"cus_1","kitefedorigin":"instance-a","data":{"subject":"no"}}"#,
        )
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
        assert_eq!(first_mismatch(&yes, &attrs()), None);
        let no = f(json!([{"prefix": {"source": "/x"}}, {"exact": {"dataschema": "x"}}]));
        assert_eq!(first_mismatch(&no, &attrs()), Some(0));
        let missing = f(json!([{"suffix": {"dataschema": "x"}}]));
        assert_eq!(
            first_mismatch(&missing, &attrs()),
            Some(0),
            "a missing attribute matches nothing"
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
        assert!(err(json!([{"cel": "true"}])).starts_with("filters[0]"));
        let mut deep = json!({"exact": {"type": "a"}});
        for _ in 0..10 {
            deep = json!({"not": deep});
        }
        assert!(err(json!([deep])).contains("deep"));
        let many: Vec<_> = (0..17).map(|_| json!({"exact": {"type": "a"}})).collect();
        assert!(err(json!(many)).contains("at most 16"));
    }
}
