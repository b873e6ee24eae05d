//! How a request body is read: a JSON object, field by field, so every refusal names its
//! field (400 `validation_failed` with `field`), and a field the request does not know is
//! refused (400 `unknown_field`), never ignored, so a client never believes kite does what
//! it does not. Each request type implements [`Request`]; its `FIELDS` are its serde names,
//! the properties of its OpenAPI schema (a test holds them to each other).

use kite_wire::fed::hop_limit;
use kite_wire::scope::{ScopeError, ScopeSet};
use kite_wire::{ApiError, Code};
use serde_json::{json, Map, Value};

/// A request body: a JSON object.
pub type Body = Map<String, Value>;

/// A request type of the admin API.
pub trait Request: Sized {
    /// The fields it reads.
    const FIELDS: &'static [&'static str];

    /// Validates the object and builds the request.
    fn read(m: &Body) -> Result<Self, ApiError>;
}

/// Reads `T` from `m`, refusing the first field `T` does not read.
pub fn read<T: Request>(m: &Body) -> Result<T, ApiError> {
    if let Some(k) = m.keys().find(|k| !T::FIELDS.contains(&k.as_str())) {
        return Err(ApiError::new(
            Code::UnknownField,
            format!(
                "{k:?} is not a field of this request (its fields: {})",
                T::FIELDS.join(", ")
            ),
        )
        .with("field", json!(k)));
    }
    T::read(m)
}

/// The scopes a request without any takes: every event type.
pub fn every_type() -> Vec<String> {
    vec!["*".to_owned()]
}

/// An optional non-empty string of at most `max` bytes, without NUL.
pub fn opt_str(m: &Body, field: &str, max: usize) -> Result<Option<String>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= max && !s.contains('\0') => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be a non-empty string of at most {max} bytes, without NUL"),
        )),
    }
}

/// A required string, as [`opt_str`].
pub fn req_str(m: &Body, field: &str, max: usize) -> Result<String, ApiError> {
    opt_str(m, field, max)?
        .ok_or_else(|| ApiError::validation(field, format!("{field} is required")))
}

/// An optional integer within `lo..=hi`.
pub fn opt_int(m: &Body, field: &str, lo: i64, hi: i64) -> Result<Option<i64>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (lo..=hi).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::validation(
                field,
                format!("{field} must be an integer within {lo}..={hi}"),
            )),
        },
    }
}

/// An optional RFC 3339 time.
pub fn opt_time(m: &Body, field: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => chrono::DateTime::parse_from_rfc3339(t.trim())
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|_| ApiError::validation(field, format!("{field} must be an RFC 3339 time"))),
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be an RFC 3339 time"),
        )),
    }
}

/// An optional list of event filters (CloudEvents Subscriptions dialects), each checked;
/// a refusal names the place.
pub fn opt_filters(m: &Body) -> Result<Option<Vec<crate::filters::Filter>>, ApiError> {
    match m.get("filters") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::filters::read("filters", v)
            .map(Some)
            .map_err(|e| ApiError::validation("filters", e)),
    }
}

/// The optional `ordering_key`: a context attribute's name (1 to 20 of a-z, 0-9). Absent:
/// None; `null`: Some(None) (a patch removes it).
pub fn opt_ordering_key(m: &Body) -> Result<Option<Option<String>>, ApiError> {
    match m.get("ordering_key") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s))
            if (1..=20).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && s != "data" =>
        {
            Ok(Some(Some(s.clone())))
        }
        Some(_) => Err(ApiError::validation(
            "ordering_key",
            "ordering_key must name a context attribute (1 to 20 of a-z, 0-9): subject, \
             source or an extension",
        )),
    }
}

/// The optional `delivery` policy: an object of the fields of
/// [`crate::peers::DeliveryPolicy`], each a number within its bounds (integers but
/// `rate_per_sec`); a refusal names the member (`delivery.max_attempts`).
pub fn opt_delivery(m: &Body) -> Result<Option<crate::peers::DeliveryPolicy>, ApiError> {
    use crate::peers::DeliveryPolicy;
    let v = match m.get("delivery") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::validation(
                "delivery",
                "delivery must be an object",
            ))
        }
    };
    let names: Vec<&str> = DeliveryPolicy::FIELDS.iter().map(|f| f.0).collect();
    if let Some(k) = v.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(ApiError::validation(
            "delivery",
            format!(
                "delivery.{k} is not a delivery setting (they are: {})",
                names.join(", ")
            ),
        ));
    }
    let mut p = DeliveryPolicy::default();
    for &(name, lo, hi) in DeliveryPolicy::FIELDS {
        let Some(x) = v.get(name).filter(|x| !x.is_null()) else {
            continue;
        };
        let n = x.as_f64().filter(|n| (lo..=hi).contains(n));
        let whole = name == "rate_per_sec" || x.is_u64();
        let Some(n) = n.filter(|_| whole) else {
            let kind = if name == "rate_per_sec" {
                "a number"
            } else {
                "an integer"
            };
            return Err(ApiError::validation(
                "delivery",
                format!("delivery.{name} must be {kind} within {lo}..={hi}"),
            ));
        };
        let int = || u32::try_from(x.as_u64().unwrap_or(0)).unwrap_or(u32::MAX);
        match name {
            "retry_base_ms" => p.retry_base_ms = Some(int()),
            "retry_max_delay_ms" => p.retry_max_delay_ms = Some(int()),
            "max_attempts" => p.max_attempts = Some(int()),
            "timeout_ms" => p.timeout_ms = Some(int()),
            "max_in_flight" => p.max_in_flight = Some(int()),
            "rate_per_sec" => p.rate_per_sec = Some(n),
            _ => p.rate_burst = Some(int()),
        }
    }
    if p.rate_burst.is_some() && p.rate_per_sec.is_none() {
        return Err(ApiError::validation(
            "delivery",
            "delivery.rate_burst is the burst of a rate: it needs rate_per_sec",
        ));
    }
    if let (Some(base), Some(max)) = (p.retry_base_ms, p.retry_max_delay_ms) {
        if max < base {
            return Err(ApiError::validation(
                "delivery",
                "delivery.retry_max_delay_ms must be at least retry_base_ms",
            ));
        }
    }
    Ok(Some(p))
}

/// The optional `max_hops`, within [`hop_limit`]'s bounds.
pub fn opt_max_hops(m: &Body) -> Result<Option<i32>, ApiError> {
    let n = opt_int(
        m,
        "max_hops",
        i64::from(hop_limit::MIN),
        i64::from(hop_limit::MAX),
    )?;
    n.map(|n| hop_limit::check(n).map_err(|e| ApiError::validation("max_hops", e)))
        .transpose()
}

/// An optional boolean.
pub fn opt_bool(m: &Body, field: &str) -> Result<Option<bool>, ApiError> {
    match m.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::validation(
            field,
            format!("{field} must be true or false"),
        )),
    }
}

/// An optional absolute http(s) URL of at most 2,048 bytes.
pub fn opt_url(m: &Body, field: &str) -> Result<Option<String>, ApiError> {
    let Some(u) = opt_str(m, field, 2048)? else {
        return Ok(None);
    };
    let bad = || ApiError::validation(field, format!("{field} must be an absolute http(s) URL"));
    let uri: http::Uri = u.parse().map_err(|_| bad())?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http") | Some("https"));
    if !scheme_ok || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    Ok(Some(u))
}

/// The wire forms of an enum's values, comma-separated (for error messages).
pub fn one_of(all: &[impl std::fmt::Display]) -> String {
    all.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An optional value of a text enum, named in `field`.
pub fn opt_enum<T: crate::types::Spelled + std::fmt::Display>(
    m: &Body,
    field: &str,
    allowed: &[T],
) -> Result<Option<T>, ApiError> {
    opt_str(m, field, 32)?
        .map(|s| {
            T::parse(&s)
                .filter(|v| allowed.iter().any(|a| a.as_str() == v.as_str()))
                .ok_or_else(|| {
                    ApiError::validation(
                        field,
                        format!("{field} must be one of {}", one_of(allowed)),
                    )
                })
        })
        .transpose()
}

/// The optional `scopes`: an array of event type globs, each checked to compile.
pub fn opt_scopes(m: &Body) -> Result<Option<Vec<String>>, ApiError> {
    opt_scopes_named(m, "scopes")
}

/// An optional array of event type globs in `field`, each checked to compile.
pub fn opt_scopes_named(m: &Body, field: &'static str) -> Result<Option<Vec<String>>, ApiError> {
    let not_list =
        || ApiError::validation(field, format!("{field} must be an array of glob strings"));
    let items = match m.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(not_list()),
    };
    let scopes: Vec<String> = items
        .iter()
        .map(|v| v.as_str().map(str::to_string).ok_or_else(not_list))
        .collect::<Result<_, _>>()?;
    ScopeSet::compile(&scopes).map_err(|e| {
        let mut err = ApiError::validation(field, e.to_string());
        if let ScopeError::Invalid { pattern, .. } = e {
            err = err.with("pattern", json!(pattern));
        }
        err
    })?;
    Ok(Some(scopes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::PeerStatus;

    fn obj(v: Value) -> Body {
        match v {
            Value::Object(m) => m,
            _ => Body::new(),
        }
    }

    fn code<T: std::fmt::Debug>(r: Result<T, ApiError>) -> (u16, String, Option<Value>) {
        let e = r.expect_err("refused");
        let field = e.body()["error"].get("field").cloned();
        (e.status, e.code.to_string(), field)
    }

    #[test]
    fn fields_are_validated_with_their_name() {
        let m = obj(
            json!({"name": "  ", "n": 99, "flag": "yes", "scopes": ["ok.*", 3],
                           "bad_scopes": ["a["], "status": "sleeping", "url": "ftp://x"}),
        );
        assert_eq!(code(opt_str(&m, "name", 10)).2, Some(json!("name")));
        assert_eq!(code(req_str(&m, "missing", 10)).2, Some(json!("missing")));
        assert_eq!(code(opt_int(&m, "n", 1, 16)).2, Some(json!("n")));
        assert_eq!(code(opt_bool(&m, "flag")).2, Some(json!("flag")));
        assert_eq!(code(opt_scopes(&m)).2, Some(json!("scopes")));
        let bad = obj(json!({"scopes": ["a["]}));
        assert_eq!(code(opt_scopes(&bad)).0, 400);
        assert_eq!(
            code(opt_enum(&m, "status", PeerStatus::SETTABLE)).2,
            Some(json!("status"))
        );
        assert_eq!(code(opt_url(&m, "url")).2, Some(json!("url")));
        let ok = obj(json!({"status": "paused", "scopes": ["stripe.*"], "n": 3}));
        assert_eq!(
            opt_enum(&ok, "status", PeerStatus::SETTABLE).expect("status"),
            Some(PeerStatus::Paused)
        );
        assert_eq!(opt_int(&ok, "n", 1, 16).expect("n"), Some(3));
        assert_eq!(
            opt_scopes(&ok).expect("scopes"),
            Some(vec!["stripe.*".to_string()])
        );
    }
}
