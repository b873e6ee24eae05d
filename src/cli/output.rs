//! How `kite admin` prints answers: an aligned table for a list and `key: value` lines for
//! one object (`--output table`), or the API's JSON pretty-printed (`--output json`).

use clap::ValueEnum;
use std::collections::BTreeMap;

use kite_api::common::{Items, Page};
use kite_kit::client::Answered;
use serde_json::value::RawValue;
use serde_json::Value;

/// The `--output` format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Readable: an aligned table for lists, `key: value` lines for one object.
    Table,
    /// The API's JSON answer, pretty-printed.
    Json,
}

/// A type of the admin API's answers the CLI shows as a table row: its columns' headers
/// and, from its fields, its cells.
pub(crate) trait Row {
    /// The columns' headers.
    const HEADERS: &'static [&'static str];
    /// One cell a column, in order.
    fn cells(&self) -> Vec<Value>;
}

/// A list answer: its items and, for a page, the cursor of the next one.
pub(crate) trait Listing {
    /// What it lists.
    type Item;
    /// The items.
    fn rows(&self) -> &[Self::Item];
    /// The cursor of the next page, when there is one.
    fn next_cursor(&self) -> Option<i64>;
}

impl<T> Listing for Items<T> {
    type Item = T;
    fn rows(&self) -> &[T] {
        &self.items
    }
    fn next_cursor(&self) -> Option<i64> {
        None
    }
}

impl<T> Listing for Page<T> {
    type Item = T;
    fn rows(&self) -> &[T] {
        &self.items
    }
    fn next_cursor(&self) -> Option<i64> {
        self.next_cursor
    }
}

/// Longest cell a table shows; longer ones end in `…` (`--output json` has them whole).
const MAX_CELL: usize = 72;

/// Fields shown first in `key: value` output, in this order; the rest follow.
const LEAD: &[&str] = &["id", "seq", "name", "key", "token", "admin_key", "status"];

/// Prints answers in the chosen format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    format: OutputFormat,
}

impl Printer {
    /// A printer for `format`.
    pub(crate) fn new(format: OutputFormat) -> Self {
        Self { format }
    }

    /// The format it prints in.
    pub(crate) fn format(&self) -> OutputFormat {
        self.format
    }

    /// A list answer: a table of its items' [`Row`]s. A further page is announced on stderr
    /// as `more_flag N`.
    pub(crate) fn list<L: Listing>(&self, answer: &Answered<L>, more_flag: Option<&str>)
    where
        L::Item: Row,
    {
        self.list_as(answer, L::Item::HEADERS, L::Item::cells, more_flag)
    }

    /// A list answer as a table of `headers`, each row's cells made by `cells`.
    pub(crate) fn list_as<L: Listing>(
        &self,
        answer: &Answered<L>,
        headers: &[&str],
        cells: impl Fn(&L::Item) -> Vec<Value>,
        more_flag: Option<&str>,
    ) {
        match self.format {
            OutputFormat::Json => crate::stdout::println(&pretty(&answer.text)),
            OutputFormat::Table => {
                let rows: Vec<Vec<Value>> = answer.rows().iter().map(cells).collect();
                crate::stdout::print(&table(headers, &rows));
                if let (Some(flag), Some(next)) = (more_flag, answer.next_cursor()) {
                    eprintln!("more: pass {flag} {next} for the next page");
                }
            }
        }
    }

    /// One object: `key: value` lines, or its JSON.
    pub(crate) fn one<T>(&self, v: &Answered<T>) {
        self.one_text(&v.text)
    }

    /// One object given as the JSON text the instance wrote.
    pub(crate) fn one_text(&self, text: &str) {
        match self.format {
            OutputFormat::Json => crate::stdout::println(&pretty(text)),
            OutputFormat::Table => crate::stdout::print(&fields(text)),
        }
    }
}

/// JSON text indented by two spaces a level without parsing it, so strings, numbers (`1.50`,
/// integers beyond 64 bits) and key order stay exactly as the instance wrote them.
pub(crate) fn pretty(text: &str) -> String {
    fn newline(out: &mut String, depth: usize) {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    }
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// A value as one cell: `-` for null or missing, strings bare, lists of scalars joined with
/// `,`, anything else as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            a.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        other => other.to_string(),
    }
}

/// At most [`MAX_CELL`] characters, on one line.
fn clip(s: String) -> String {
    let s = if s.contains('\n') {
        s.replace(['\r', '\n'], " ")
    } else {
        s
    };
    if s.chars().count() <= MAX_CELL {
        return s;
    }
    let mut out: String = s.chars().take(MAX_CELL - 1).collect();
    out.push('…');
    out
}

/// An aligned table: a header line, then one line per row of cells.
pub(crate) fn table(headers: &[&str], cells: &[Vec<Value>]) -> String {
    let rows: Vec<Vec<String>> = cells
        .iter()
        .map(|row| {
            (0..headers.len())
                .map(|i| clip(cell(row.get(i).unwrap_or(&Value::Null))))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                l.push_str(c);
                l.push_str(&" ".repeat(pad));
            }
        }
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(headers.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `key: value` lines of a JSON object's text, keys aligned; a nested object's fields get
/// dotted keys (`event.type`); deeper values are their JSON text as written, on one line.
pub(crate) fn fields(text: &str) -> String {
    let Some(top) = object(text) else {
        return format!("{}\n", raw_cell(text));
    };
    let mut pairs = Vec::new();
    for (k, raw) in sorted(&top) {
        match object(raw.get()).filter(|inner| !inner.is_empty()) {
            Some(inner) => {
                for (ik, iraw) in sorted(&inner) {
                    pairs.push((format!("{k}.{ik}"), raw_cell(iraw.get())));
                }
            }
            None => pairs.push((k.clone(), raw_cell(raw.get()))),
        }
    }
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}:{} {v}\n", " ".repeat(width - k.len())))
        .collect()
}

/// The fields of a JSON object's text, each kept as written.
fn object(text: &str) -> Option<BTreeMap<String, Box<RawValue>>> {
    serde_json::from_str(text).ok()
}

/// The fields of an object: those of [`LEAD`] first, in its order, then the rest sorted.
fn sorted(m: &BTreeMap<String, Box<RawValue>>) -> Vec<(&String, &RawValue)> {
    let mut fields: Vec<(&String, &RawValue)> = m.iter().map(|(k, v)| (k, &**v)).collect();
    fields.sort_by_key(|(k, _)| (LEAD.iter().position(|l| l == k).unwrap_or(LEAD.len()), *k));
    fields
}

/// A value's JSON text as one cell: `-` for null, strings unquoted, lists of strings joined
/// with `,`, anything else as written (numbers and key order kept) on one line.
fn raw_cell(raw: &str) -> String {
    let raw = raw.trim();
    if raw == "null" {
        return "-".to_string();
    }
    if let Ok(s) = serde_json::from_str::<String>(raw) {
        return s;
    }
    if let Ok(list) = serde_json::from_str::<Vec<String>>(raw) {
        return list.join(",");
    }
    raw.replace(['\r', '\n', '\t'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_show_missing_fields_as_dashes() {
        let rows = [
            vec![
                json!("p1"),
                json!("instance-b"),
                json!(["stripe.*", "gh.*"]),
                json!(0),
            ],
            vec![json!("p22"), json!("c"), json!([]), Value::Null, json!("t")],
        ];
        let headers = ["ID", "NAME", "SCOPES", "DEAD", "TYPE"];
        assert_eq!(
            table(&headers, &rows),
            "ID   NAME        SCOPES         DEAD  TYPE\n\
             p1   instance-b  stripe.*,gh.*  0     -\n\
             p22  c                          -     t\n"
        );
        assert_eq!(table(&headers[..1], &[]), "ID\n");
        let long = clip("x".repeat(100));
        assert_eq!(long.chars().count(), MAX_CELL);
        assert!(long.ends_with('…'));
    }

    #[test]
    fn json_is_indented_as_written() {
        let text = r#"{"b":1.50,"a":[1, 2],"e":{ },"l":[],"s":"x,{\"y\":[]}\\","n":123456789012345678901234}"#;
        assert_eq!(
            pretty(text),
            "{\n  \"b\": 1.50,\n  \"a\": [\n    1,\n    2\n  ],\n  \"e\": {},\n  \"l\": [],\n  \
             \"s\": \"x,{\\\"y\\\":[]}\\\\\",\n  \"n\": 123456789012345678901234\n}"
        );
        assert_eq!(pretty("[]"), "[]");
    }

    #[test]
    fn one_object_is_key_value_lines_with_the_id_first() {
        let v = r#"{"status":"paused","id":"p1","max_hops":3,"last_error":null,
                    "event":{"type":"com.stripe.x","data":{"a":1.50}}}"#;
        assert_eq!(
            fields(v),
            "id:         p1\n\
             status:     paused\n\
             event.data: {\"a\":1.50}\n\
             event.type: com.stripe.x\n\
             last_error: -\n\
             max_hops:   3\n"
        );
    }
}
