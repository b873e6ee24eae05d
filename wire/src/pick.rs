//! Reading the few fields a plain webhook's mapping needs from its JSON body, in one pass
//! and without building the body as a value.
//!
//! The whole text is still parsed (and refused as `serde_json` refuses it, numbers out of
//! range included); only the picked strings are kept, borrowed when they have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// The strings a webhook body offers its mapping. A field that is absent or not a string
/// reads as `None`; a repeated key counts by its last value, as in a JSON object read whole.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Picked<'a> {
    /// Top-level `id`.
    pub id: Option<Cow<'a, str>>,
    /// Top-level `type`.
    pub ty: Option<Cow<'a, str>>,
    /// Top-level `event`.
    pub event: Option<Cow<'a, str>>,
    /// Top-level `event_id` (Slack).
    pub event_id: Option<Cow<'a, str>>,
    /// `data.object.id` (Stripe).
    pub object_id: Option<Cow<'a, str>>,
    /// `repository.full_name` (GitHub).
    pub repo: Option<Cow<'a, str>>,
}

/// Parses `text` as JSON and picks its fields; errors are `serde_json`'s own.
pub(crate) fn pick(text: &str) -> serde_json::Result<Picked<'_>> {
    let mut de = serde_json::Deserializer::from_str(text);
    let picked = de.deserialize_any(Top)?;
    de.end()?;
    Ok(picked)
}

const TOP: &[&str] = &["id", "type", "event", "event_id", "data", "repository"];

/// What to keep of one JSON value.
#[derive(Clone, Copy)]
enum Want {
    /// Nothing: the value is parsed and dropped.
    Skip,
    /// It, if it is a string.
    Str,
    /// The string at this path of keys under it, if it is an object.
    At(&'static [&'static str]),
}

/// One value, kept as [`Want`] says.
#[derive(Clone, Copy)]
struct Walk(Want);

/// A map key: its index in a list, or `None` for any other key.
struct KeyIn(&'static [&'static str]);

struct Top;

impl<'de> DeserializeSeed<'de> for KeyIn {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIn {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().position(|k| *k == v))
    }
}

impl<'de> DeserializeSeed<'de> for Walk {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Scalars that are not strings: nothing to keep.
macro_rules! nothing_for_scalars {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element_seed(Walk(Want::Skip))?.is_some() {}
            Ok($value)
        }
    };
}

impl<'de> Visitor<'de> for Walk {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    nothing_for_scalars!(None);
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then_some(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(matches!(self.0, Want::Str).then(|| Cow::Owned(v.to_owned())))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (key, rest): (&'static [&'static str], _) = match self.0 {
            Want::At([key, rest @ ..]) => (std::slice::from_ref(key), rest),
            _ => (&[], &[][..]),
        };
        let mut found = None;
        while let Some(k) = map.next_key_seed(KeyIn(key))? {
            match k {
                Some(_) if rest.is_empty() => found = map.next_value_seed(Walk(Want::Str))?,
                Some(_) => found = map.next_value_seed(Walk(Want::At(rest)))?,
                None => {
                    map.next_value_seed(Walk(Want::Skip))?;
                }
            }
        }
        Ok(found)
    }
}

impl<'de> Visitor<'de> for Top {
    type Value = Picked<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    nothing_for_scalars!(Picked::default());
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Picked::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut p = Picked::default();
        while let Some(k) = map.next_key_seed(KeyIn(TOP))? {
            let (slot, want) = match k {
                Some(0) => (&mut p.id, Want::Str),
                Some(1) => (&mut p.ty, Want::Str),
                Some(2) => (&mut p.event, Want::Str),
                Some(3) => (&mut p.event_id, Want::Str),
                Some(4) => (&mut p.object_id, Want::At(&["object", "id"])),
                Some(_) => (&mut p.repo, Want::At(&["full_name"])),
                None => {
                    map.next_value_seed(Walk(Want::Skip))?;
                    continue;
                }
            };
            *slot = map.next_value_seed(Walk(want))?;
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// What reading the body whole gives, the way the mapping used to.
    fn whole(text: &str) -> Option<[Option<String>; 6]> {
        let v: Value = serde_json::from_str(text).ok()?;
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        Some([
            s("/id"),
            s("/type"),
            s("/event"),
            s("/event_id"),
            s("/data/object/id"),
            s("/repository/full_name"),
        ])
    }

    fn picked(text: &str) -> Option<[Option<String>; 6]> {
        let p = pick(text).ok()?;
        let s = |c: Option<Cow<str>>| c.map(Cow::into_owned);
        Some([
            s(p.id),
            s(p.ty),
            s(p.event),
            s(p.event_id),
            s(p.object_id),
            s(p.repo),
        ])
    }

    #[test]
    fn picks_what_reading_the_whole_body_would() {
        for text in [
            r#"{"id":"evt_1","type":"a.b","data":{"object":{"id":"pi_1","x":[1,{"id":2}]}}}"#,
            r#"{"event":"push","repository":{"full_name":"o/r","id":"9"},"id":7}"#,
            r#"{"type":"t\u0041\n","event_id":"E\"1","data":{"object":"nope"}}"#,
            r#"{"type":"first","type":"last","data":{"object":{"id":"x"}},"data":1}"#,
            r#"{"data":{"object":{"id":null}},"repository":[{"full_name":"no"}]}"#,
            r#"{"nested":{"type":"not top","id":"no"},"id":["no"],"ty\u0070e":"escaped key"}"#,
            r#"[{"type":"in an array"}]"#,
            r#""just a string""#,
            "12.5e3",
            "null",
            " {} ",
            "{\"big\":1e400}",
            "{\"s\":\"\\ud800\"}",
            "{\"id\":\"a\"} x",
            "{\"id\":\"a\",}",
            "{nope",
            "",
        ] {
            assert_eq!(picked(text), whole(text), "{text}");
        }
    }

    #[test]
    fn unescaped_strings_are_borrowed() {
        let p = pick(r#"{"id":"evt_1","type":"a\u0062"}"#).unwrap();
        assert!(matches!(p.id, Some(Cow::Borrowed("evt_1"))));
        assert_eq!(p.ty.as_deref(), Some("ab"));
    }
}
