//! W3C Trace Context on events: the CloudEvents Distributed Tracing extension (`traceparent`,
//! `tracestate`). An event keeps the context of the span that took it in here (a child of
//! the context it came with, or the root of a new trace); each delivery attempt is a child of
//! that span, and the copy it forwards carries the attempt's context, so one event's spans at
//! every instance it crosses form one trace.
//!
//! The context is kept beside the stored event (like the federation extensions) and spliced
//! into what is forwarded, streamed and listed; an origin signature does not cover it (it
//! changes at every hop).

use serde_json::{Map, Value};

/// The extension (and HTTP header) carrying the parent: `00-{trace-id}-{parent-id}-{flags}`.
pub const EXT_TRACEPARENT: &str = "traceparent";
/// The extension (and HTTP header) carrying vendors' trace state.
pub const EXT_TRACESTATE: &str = "tracestate";
/// The longest `tracestate` kept (the W3C limit a platform must propagate); a longer one is
/// dropped, the trace itself kept.
pub const MAX_TRACESTATE_BYTES: usize = 512;
/// Most list members of a `tracestate` kept (the W3C limit).
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Room the two members take in an event's text at most (a state's quotes and backslashes
/// take two bytes each once escaped).
pub const MAX_MEMBERS_BYTES: usize = 32 + 55 + 2 * MAX_TRACESTATE_BYTES;

/// A W3C trace context: the trace, the span a child continues from, its flags and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The parent span's id (never all zeros).
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// The `tracestate`, when there was a valid one.
    pub state: Option<String>,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// A `tracestate` worth keeping: visible ASCII and spaces, within the W3C bounds.
fn valid_state(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TRACESTATE_BYTES
        && s.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && s.split(',').count() <= MAX_TRACESTATE_MEMBERS
}

impl TraceContext {
    /// Reads a `traceparent` (and its `tracestate`) as W3C Trace Context says a receiver
    /// does: version `ff` and malformed values are refused (None: a new trace starts); a
    /// later version is read for its first four fields. A `tracestate` that is not valid is
    /// dropped, the parent kept.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let tp = traceparent.trim();
        let version = tp.get(0..2)?;
        let v = hex_bytes::<1>(version)?[0];
        if v == 0xff || (v == 0 && tp.len() != 55) || (tp.len() > 55 && tp.as_bytes()[55] != b'-') {
            return None;
        }
        let (sep, rest) = (tp.as_bytes().get(2)?, tp.get(3..55)?);
        if *sep != b'-' || rest.as_bytes().get(32) != Some(&b'-') || rest.as_bytes()[49] != b'-' {
            return None;
        }
        let trace_id = hex_bytes::<16>(&rest[0..32])?;
        let span_id = hex_bytes::<8>(&rest[33..49])?;
        let flags = hex_bytes::<1>(&rest[50..52])?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let state = tracestate
            .map(str::trim)
            .filter(|s| valid_state(s))
            .map(str::to_string);
        Some(Self {
            trace_id,
            span_id,
            flags,
            state,
        })
    }

    /// The root of a new trace (sampled).
    pub fn root() -> Self {
        Self {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: 1,
            state: None,
        }
    }

    /// A child of this context with a new span id of its own (the same trace, flags, state).
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(),
            ..self.clone()
        }
    }

    /// The `traceparent` value (version 00).
    pub fn traceparent(&self) -> String {
        // Hex into a buffer of its own length: every delivery attempt writes it twice
        // (header and event), and `hex::encode` collects its digits char by char.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        let filled = hex::encode_to_slice(self.trace_id, &mut out[3..35])
            .and_then(|()| hex::encode_to_slice(self.span_id, &mut out[36..52]))
            .and_then(|()| hex::encode_to_slice([self.flags], &mut out[53..55]));
        debug_assert!(filled.is_ok(), "the slices are twice the bytes' length");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The extensions as JSON object members to splice into an event's text.
    pub fn members(&self) -> String {
        let mut out = format!("\"{EXT_TRACEPARENT}\":\"{}\"", self.traceparent());
        if let Some(state) = &self.state {
            out.push_str(&format!(
                ",\"{EXT_TRACESTATE}\":{}",
                Value::from(state.as_str())
            ));
        }
        out
    }

    /// The HTTP headers carrying it.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![(EXT_TRACEPARENT, self.traceparent())];
        if let Some(state) = &self.state {
            h.push((EXT_TRACESTATE, state.clone()));
        }
        h
    }
}

/// Random bytes that are not all zeros (W3C: an all-zero id is invalid).
fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = rand::random();
        if b != [0; N] {
            return b;
        }
    }
}

/// Takes an event's trace extensions out of it: the context they name, None when it has
/// none or they are malformed (a new trace starts, as W3C Trace Context asks).
pub fn take(event: &mut Map<String, Value>) -> Option<TraceContext> {
    let parent = event.remove(EXT_TRACEPARENT);
    let state = event.remove(EXT_TRACESTATE);
    TraceContext::parse(
        parent.as_ref()?.as_str()?,
        state.as_ref().and_then(Value::as_str),
    )
}

/// Removes the trace extensions from an event object.
pub fn strip(event: &mut Map<String, Value>) {
    event.remove(EXT_TRACEPARENT);
    event.remove(EXT_TRACESTATE);
}

/// Spans exported to OpenTelemetry: a stage's span continues an event's context, and the
/// context it answers is what the event carries on. Spans are made only while an exporter
/// is on ([`otel::enabled`]); off, a context is continued with a random span id and no span
/// is made at all.
#[cfg(feature = "otel")]
pub mod otel {
    use super::TraceContext;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use std::sync::atomic::{AtomicBool, Ordering};
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    /// The target of kite's spans: what the exporter's layer takes.
    pub const TARGET: &str = "kite::trace";

    static ON: AtomicBool = AtomicBool::new(false);

    /// Notes that spans are exported from now on (the binary, once its layer is installed).
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// Whether spans are exported: make them only then.
    pub fn enabled() -> bool {
        ON.load(Ordering::Relaxed)
    }

    /// Makes `span` (made while [`enabled`]) a child of `parent` (else the root of a new
    /// trace) and answers the context its own children carry; a disabled span, or a
    /// subscriber without the exporter's layer, continues `parent` with a new span id.
    pub fn continue_in(span: &tracing::Span, parent: Option<&TraceContext>) -> TraceContext {
        let fallback = || parent.map_or_else(TraceContext::root, TraceContext::child);
        if span.is_disabled() {
            return fallback();
        }
        if let Some(p) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(p.trace_id),
                SpanId::from_bytes(p.span_id),
                TraceFlags::new(p.flags),
                true,
                TraceState::default(),
            );
            let cx = opentelemetry::Context::new().with_remote_span_context(remote);
            if span.set_parent(cx).is_err() {
                return fallback();
            }
        }
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if !own.is_valid() {
            return fallback();
        }
        TraceContext {
            trace_id: own.trace_id().to_bytes(),
            span_id: own.span_id().to_bytes(),
            flags: own.trace_flags().to_u8(),
            state: parent.and_then(|p| p.state.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_reads_and_writes_back() {
        let c = TraceContext::parse(TP, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.traceparent(), TP);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.members(),
            format!(
                r#""traceparent":"{TP}","tracestate":"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE""#
            )
        );
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
        assert_eq!(child.state, c.state);
        // A later version is read for its first fields.
        let later = format!("01{}-extra", &TP[2..]);
        assert_eq!(
            TraceContext::parse(&later, None).unwrap().trace_id,
            c.trace_id
        );
    }

    #[test]
    fn malformed_contexts_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b-01",
        ] {
            assert_eq!(TraceContext::parse(bad, None), None, "{bad}");
        }
        // A state too long, or not ASCII, is dropped; the parent is kept.
        for state in [
            "x".repeat(600),
            "a=é".into(),
            (0..40)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            let c = TraceContext::parse(TP, Some(&state)).unwrap();
            assert_eq!(c.state, None);
        }
        assert!(TraceContext::root().members().len() <= MAX_MEMBERS_BYTES);
    }

    #[test]
    fn extensions_are_taken_out_of_an_event() {
        let mut ev: Map<String, Value> = serde_json::from_str(&format!(
            r#"{{"id":"1","traceparent":"{TP}","tracestate":"a=b"}}"#
        ))
        .unwrap();
        let c = take(&mut ev).unwrap();
        assert_eq!(c.state.as_deref(), Some("a=b"));
        assert_eq!(ev.len(), 1);
        let mut bad: Map<String, Value> =
            serde_json::from_str(r#"{"traceparent":7,"tracestate":"a=b"}"#).unwrap();
        assert_eq!(take(&mut bad), None);
        assert!(bad.is_empty());
    }
}
