//! What an operator sees: Prometheus metrics moving with traffic (scraped and parsed from the
//! exposition format), and logs a machine can read.

use crate::common;

use std::time::Duration;

use common::listen::Listen;
use common::metrics::{reaches, scrape, value};
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn metrics_move_with_traffic() {
    let a = Instance::process_with("oa", &[]).await;
    let b = Instance::process_with("ob", &[]).await;
    let (peer_id, _) = peer(&a, &b, &["*"], 3).await;
    let team = ("team", "default");

    for id in ["m_1", "m_2", "m_1"] {
        a.hook("stripe", &stripe_event(id, "charge.succeeded"))
            .await;
    }
    let (s, _) = raw_post_json(&a, "/hooks/nobody/stripe").await;
    assert_eq!(s, 404);

    let text = scrape(&a).await;
    let ingest = |outcome| {
        value(
            &text,
            "kite_ingest_total",
            &[team, ("source", "stripe"), ("outcome", outcome)],
        )
    };
    assert_eq!(ingest("accepted"), Some(2.0), "{text}");
    assert_eq!(ingest("duplicate"), Some(1.0), "{text}");
    assert!(
        value(
            &text,
            "kite_ingest_total",
            &[("team", "-"), ("outcome", "rejected")]
        ) >= Some(1.0),
        "{text}"
    );
    assert!(
        value(
            &text,
            "kite_ingest_duration_seconds_count",
            &[("source", "stripe")]
        ) >= Some(3.0),
        "{text}"
    );
    let peer = ("peer", "ob");
    reaches(
        &a,
        "kite_delivery_attempts_total",
        &[team, peer, ("outcome", "delivered")],
        2.0,
    )
    .await;
    reaches(&a, "kite_end_to_end_seconds_count", &[team, peer], 2.0).await;
    let text = scrape(&a).await;
    // Each delivery went one lane or the other (the local one once A's worker for the new
    // peer runs; tests/faults.rs covers that lane).
    let lane = |l| value(&text, "kite_deliveries_handed_total", &[("lane", l)]).unwrap_or(0.0);
    assert_eq!(lane("local") + lane("broker"), 2.0, "{text}");
    assert_eq!(
        value(
            &text,
            "kite_routing_decisions_total",
            &[("reason", "forward")]
        ),
        Some(2.0)
    );
    assert!(
        value(
            &text,
            "kite_delivery_attempt_duration_seconds_bucket",
            &[peer, ("le", "60")]
        ) >= Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "kite_db_pool_connections_max", &[]),
        Some(4.0),
        "{text}"
    );
    assert!(
        value(&text, "process_resident_memory_bytes", &[]) > Some(0.0),
        "{text}"
    );
    reaches(
        &b,
        "kite_ingest_total",
        &[team, ("source", "kite"), ("outcome", "accepted")],
        2.0,
    )
    .await;

    // A paused peer's waiting rows, and a replay of dead ones.
    let (s, _) = a
        .patch(
            &format!("/api/federation/peers/{peer_id}"),
            serde_json::json!({"status":"paused"}),
        )
        .await;
    assert_eq!(s, 200);
    a.hook("stripe", &stripe_event("m_3", "charge.succeeded"))
        .await;
    reaches(&a, "kite_deliveries_pending", &[team, peer], 1.0).await;
    assert_eq!(
        value(&scrape(&a).await, "kite_deliveries_parked", &[team, peer]),
        Some(0.0)
    );

    // `/ws` connections.
    let listen = Listen::start(&a, &["--source", "stripe"]).await;
    reaches(&a, "kite_ws_connections", &[team], 1.0).await;
    drop(listen);
    reaches(&a, "kite_ws_connections", &[team], 0.0).await;
}

#[tokio::test]
async fn the_shipped_alert_rules_and_dashboard_hold_and_name_only_metrics_kite_exports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("deploy/prometheus");
    let promtool = common::tools::promtool();
    // The rules are valid, and each alert fires on the series that mean it and not on
    // healthy ones (their unit tests, deploy/prometheus/kite-alerts.test.yml).
    for args in [
        ["check", "rules", "kite-alerts.yml"],
        ["test", "rules", "kite-alerts.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&rules)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What kite exports: its own metrics (a histogram as its series), and the process
    // metrics a running kite shows.
    let mut exported: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (name, kind, _, _) in kite_wire::metrics::ALL {
        exported.insert(name.to_string());
        if matches!(kind, kite_wire::metrics::Kind::Histogram) {
            for suffix in ["_bucket", "_sum", "_count"] {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }
    let a = Instance::process_with("alerts", &[]).await;
    let text = scrape(&a).await;
    exported.extend(
        text.lines()
            .filter(|l| l.starts_with("process_"))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_owned),
    );
    assert!(exported.contains("process_resident_memory_bytes"), "{text}");
    let dashboard = std::fs::read_to_string(root.join("deploy/grafana/kite-dashboard.json"))
        .expect("the dashboard");
    let parsed: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<String> = parsed["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{} queries", exprs.len());
    let alerts = std::fs::read_to_string(rules.join("kite-alerts.yml")).expect("the rules");
    for (what, text) in [("the rules", alerts), ("the dashboard", exprs.join("\n"))] {
        let names: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("kite_") || w.starts_with("process_"))
            .collect();
        assert!(!names.is_empty(), "{what} name no metric");
        for n in names {
            assert!(
                exported.contains(n),
                "{what} name {n}, which kite does not export"
            );
        }
    }
}

#[tokio::test]
async fn the_readme_lists_every_metric() {
    let readme = include_str!("../../README.md");
    for (name, _, labels, _) in kite_wire::metrics::ALL {
        let row = readme
            .lines()
            .find(|l| l.contains(&format!("`{name}`")))
            .unwrap_or_else(|| panic!("README does not list {name}"));
        for l in *labels {
            assert!(
                row.contains(l),
                "README's {name} row does not name its label {l}"
            );
        }
    }
}

#[tokio::test]
async fn logs_are_json_lines_on_request_and_never_coloured_in_a_pipe() {
    let json =
        Instance::process_with("lj", &[("KITE_LOG_FORMAT", "json"), ("RUST_LOG", "info")]).await;
    let text = Instance::process_with("lt", &[("RUST_LOG", "info")]).await;
    // "kite serving" is logged right after the ready line.
    let logged = |inst: &Instance| {
        let lines = inst.logs.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .iter()
            .any(|l| l.contains("kite serving"))
            .then_some(lines)
    };
    eventually("json logs", WAIT, || async { logged(&json) }).await;
    eventually("text logs", WAIT, || async { logged(&text) }).await;
    let lines = json.logs.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"message\":\"kite serving\"")),
        "{lines:?}"
    );
    let lines = text.logs.lock().map(|l| l.clone()).unwrap_or_default();
    assert!(
        lines.iter().any(|l| l.contains("kite serving")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:?}");

    // A wrong format is refused with the reason.
    let out = tokio::process::Command::new(kite_bin())
        .args(["admin", "secret-key"])
        .env("KITE_LOG_FORMAT", "xml")
        .output()
        .await
        .expect("run kite");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("KITE_LOG_FORMAT must be text or json"));
}

/// POSTs a small JSON body to `path` on `inst`.
async fn raw_post_json(inst: &Instance, path: &str) -> (u16, Value) {
    let r = inst
        .http
        .post(format!("{}{path}", inst.url))
        .json(&serde_json::json!({"id": "x"}))
        .send()
        .await
        .expect("post");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}
