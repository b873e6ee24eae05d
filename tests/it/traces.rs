//! One trace across every hop: a webhook's W3C trace context travels A → B → C on the event
//! (the CloudEvents Distributed Tracing extension), and the spans each instance exports over
//! OTLP/HTTP (to a receiver this test runs) form one trace, their parents chained.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::peering::handshake;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;

const WAIT: Duration = Duration::from_secs(60);

/// A span as the receiver collected it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attrs: Vec<(String, String)>,
}

impl Got {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP/HTTP (protobuf) trace receiver on loopback: its base URL and what it collected.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sink = sink.clone();
            async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                    return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut spans = Vec::new();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref()?.value.as_ref())
                        .map(|v| match v {
                            V::StringValue(s) => s.clone(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    for s in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let attrs = s
                            .attributes
                            .iter()
                            .map(|a| {
                                let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                                    Some(V::StringValue(s)) => s.clone(),
                                    Some(V::IntValue(i)) => i.to_string(),
                                    Some(other) => format!("{other:?}"),
                                    None => String::new(),
                                };
                                (a.key.clone(), v)
                            })
                            .collect();
                        spans.push(Got {
                            service: service.clone(),
                            name: s.name,
                            trace_id: hex::encode(&s.trace_id),
                            span_id: hex::encode(&s.span_id),
                            parent: hex::encode(&s.parent_span_id),
                            attrs,
                        });
                    }
                }
                sink.lock().expect("lock").extend(spans);
                (
                    axum::http::StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn one_event_is_one_trace_across_three_instances() {
    let (otlp, got) = otlp_receiver().await;
    let env = |service: &'static str| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
            ("OTEL_SERVICE_NAME", service.to_string()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
        ]
    };
    let start = |name: &'static str| {
        let vars = env(name);
        async move {
            let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Instance::process_with(name, &pairs).await
        }
    };
    let a = start("ta").await;
    let b = start("tb").await;
    let c = start("tc").await;
    handshake(&a, &b, "*", "*").await;
    handshake(&b, &c, "*", "*").await;

    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let (s, v) = a
        .hook_with(
            "stripe",
            &stripe_event("evt_traced", "charge.succeeded"),
            &[("traceparent", &traceparent), ("tracestate", "vendor=1")],
        )
        .await;
    assert_eq!(s, 202, "{v}");
    eventually("A's event at C", WAIT, || async {
        (c.count_events("evt_traced").await == 1).then_some(())
    })
    .await;

    // The event carries the trace at every instance, each time the context of the span
    // that took it in there; the caller's tracestate travels with it.
    let mut parents = Vec::new();
    for inst in [&a, &b, &c] {
        let ev = inst.event("evt_traced").await.expect("event")["event"].clone();
        let tp = ev["traceparent"].as_str().expect("traceparent").to_string();
        assert_eq!(&tp[3..35], TRACE, "{} {ev}", inst.name);
        assert_eq!(ev["tracestate"], "vendor=1", "{ev}");
        parents.push(tp[36..52].to_string());
    }
    assert!(!parents.contains(&CALLER_SPAN.to_string()), "{parents:?}");

    // The spans: A's ingest under the caller's span, each delivery under its instance's
    // ingest, each ingest under the delivery that brought the event there.
    let spans = eventually("the five spans of the event's way", WAIT, || async {
        let g = got.lock().expect("lock").clone();
        let of = |service: &str, name: &str| {
            g.iter()
                .find(|s| {
                    s.service == service
                        && s.name == name
                        && s.attr("cloudevents.event_id") == Some("evt_traced")
                })
                .cloned()
        };
        Some([
            of("ta", "kite.ingest")?,
            of("ta", "kite.deliver")?,
            of("tb", "kite.ingest")?,
            of("tb", "kite.deliver")?,
            of("tc", "kite.ingest")?,
        ])
    })
    .await;
    let [a_in, a_out, b_in, b_out, c_in] = &spans;
    for s in &spans {
        assert_eq!(s.trace_id, TRACE, "{s:?}");
        assert_eq!(
            s.attr("cloudevents.event_type"),
            Some("com.stripe.charge.succeeded"),
            "{s:?}"
        );
    }
    assert_eq!(a_in.parent, CALLER_SPAN);
    assert_eq!(a_out.parent, a_in.span_id);
    assert_eq!(b_in.parent, a_out.span_id);
    assert_eq!(b_out.parent, b_in.span_id);
    assert_eq!(c_in.parent, b_out.span_id);
    // What each event says is its instance's ingest span.
    assert_eq!(
        parents,
        vec![
            a_in.span_id.clone(),
            b_in.span_id.clone(),
            c_in.span_id.clone()
        ]
    );
    assert_eq!(a_in.attr("kite.outcome"), Some("accepted"), "{a_in:?}");
    assert!(a_out.attr("kite.peer").is_some(), "{a_out:?}");
    assert_eq!(
        a_out.attr("http.response.status_code"),
        Some("202"),
        "{a_out:?}"
    );
    assert_eq!(a_out.attr("kite.outcome"), Some("Delivered"), "{a_out:?}");
}

#[tokio::test]
async fn without_a_trace_a_webhook_starts_one_and_no_span_is_exported_when_unset() {
    let a = Instance::start("tn").await;
    let (s, _) = a
        .hook("stripe", &stripe_event("evt_root", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    let ev = a.event("evt_root").await.expect("event")["event"].clone();
    let tp = ev["traceparent"].as_str().expect("a new trace");
    let parsed = kite_wire::trace::TraceContext::parse(tp, None).expect("valid traceparent");
    assert_eq!(parsed.flags, 1);
    assert!(ev.get("tracestate").is_none(), "{ev}");
    // A malformed one starts a new trace too.
    let (s, _) = a
        .hook_with(
            "stripe",
            &stripe_event("evt_bad_trace", "charge.succeeded"),
            &[("traceparent", "00-zz-00f067aa0ba902b7-01")],
        )
        .await;
    assert_eq!(s, 202);
    let ev = a.event("evt_bad_trace").await.expect("event")["event"].clone();
    assert!(
        kite_wire::trace::TraceContext::parse(ev["traceparent"].as_str().unwrap_or(""), None)
            .is_some()
    );
}
