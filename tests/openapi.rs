//! The OpenAPI document (`/api/openapi.json`): it names every route kite serves and only
//! those, and schemathesis, fuzzing a live instance from it, finds no server error and no
//! answer that does not fit it.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The routes of the document, as (method, path template).
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            ops.push((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// True if an answer is the router's own "no such route" (the fallback's 404 or a 405).
fn no_route(status: u16, body: &Value) -> bool {
    status == 405
        || (status == 404
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("no route for")))
}

/// Route registrations that bypass the document (`routes!` registers a route and its
/// operation at once; a plain `.route(` would serve a route the document does not name).
fn undocumented_registrations() -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("http/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("http/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            // Code under test only builds its own little routers.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (n, line) in code.lines().enumerate() {
                let l = line.trim_start();
                if l.starts_with("//") {
                    continue;
                }
                for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                    if l.contains(call) {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, l));
                    }
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn the_document_names_every_route_and_every_route_it_names_is_served() {
    let inst = Instance::start("oa").await;
    let res = inst
        .http
        .get(format!("{}/api/openapi.json", inst.url))
        .send()
        .await
        .expect("GET /api/openapi.json");
    assert_eq!(res.status().as_u16(), 200);
    assert!(res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json")));
    let doc: Value = res.json().await.expect("the document is JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let ops = operations(&doc);
    // The routes every user reaches, by name: the document is no smaller than the API.
    for (method, path) in [
        ("POST", "/hooks/{team}/{source}"),
        ("GET", "/ws"),
        ("GET", "/health"),
        ("GET", "/api/openapi.json"),
        ("GET", "/.well-known/kite/server"),
        ("POST", "/api/federation/peers"),
        ("PATCH", "/api/federation/peers/{id}"),
        ("POST", "/api/federation/peers/{id}/replay-dead"),
        ("GET", "/api/federation/outbox"),
        ("GET", "/api/events/{id}"),
        ("POST", "/api/federation/invitations/accept"),
        ("POST", "/federation/v1/teams/{team}/heartbeat"),
        ("DELETE", "/api/teams/{id}"),
    ] {
        assert!(
            ops.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is missing from the document"
        );
    }
    // Every operation has its answers and an error answer in the one documented form.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            let responses = op["responses"].as_object().expect("responses");
            assert!(
                responses
                    .keys()
                    .any(|k| k.starts_with('1') || k.starts_with('2')),
                "{method} {path} documents no success"
            );
            assert_eq!(
                op["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
        }
    }

    // The server serves every route the document names...
    let probe = |method: String, path: String| {
        let path = path
            .replace("{team}", "default")
            .replace("{source}", "kite")
            .replace("{name}", "nosuch")
            .replace("{grant}", "00000000-0000-4000-8000-000000000000")
            .replace("{id}", "00000000-0000-4000-8000-000000000000");
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let body = (m != reqwest::Method::GET).then(|| serde_json::json!({}));
        let inst = &inst;
        async move { inst.api(m, &path, body).await }
    };
    let (s, body) = probe("GET".into(), "/api/no-such-route".into()).await;
    assert!(
        no_route(s, &body),
        "the probe tells a missing route: {s} {body}"
    );
    for (method, path) in ops {
        // Rotating the identity or making keys on the way is harmless here.
        let (s, body) = probe(method.clone(), path.clone()).await;
        assert!(
            !no_route(s, &body),
            "{method} {path} is in the document but not served: {s} {body}"
        );
    }
    // ...and serves no route the document does not name.
    let bypass = undocumented_registrations();
    assert!(
        bypass.is_empty(),
        "routes registered outside utoipa_axum::routes! (not in the document):\n{}",
        bypass.join("\n")
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_every_answer_fits_the_document() {
    // Ingress and router only: nothing the fuzzer makes is ever delivered anywhere.
    let inst = Instance::start_with("st", &[("KITE_ROLES", "ingress,router")]).await;
    // A few things for the fuzzer to find: a source, a paused peer, an event.
    let (s, _) = inst
        .post(
            "/api/sources",
            serde_json::json!({"name":"shop","scheme":"hmac-sha256","secret":"s3cret"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = inst
        .post(
            "/api/federation/peers",
            serde_json::json!({"name":"far","peer_hook_url":"http://127.0.0.1:9/hooks/default/kite",
                               "outbound_token":"t","status":"paused"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = inst.hook("orders", &stripe_event("evt_st_1", "a.b")).await;
    assert_eq!(s, 202);

    // What schemathesis found first: text with a NUL character, which Postgres cannot store,
    // is the caller's error (400), wherever it comes in, never a 500.
    let (s, body) = inst
        .api(
            reqwest::Method::PUT,
            "/api/federation/policy",
            Some(serde_json::json!({"allowed_peers": ["a\u{0}b"]})),
        )
        .await;
    assert_eq!(
        (s, &body["error"]["code"]),
        (400, &serde_json::json!("invalid_value")),
        "{body}"
    );
    for path in [
        "/api/sources/a%00b",
        "/api/events/a%00b",
        "/api/federation/outbox?type=a%00b",
        "/api/events?source=a%00b",
    ] {
        let method = if path.starts_with("/api/sources") {
            "DELETE"
        } else {
            "GET"
        };
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let (status, body) = inst.api(m, path, None).await;
        assert!(
            status == 400 || status == 404,
            "{method} {path}: {status} {body}"
        );
        assert!(body["error"]["code"].is_string(), "{method} {path}: {body}");
    }

    // The document as the instance serves it, handed over as a file with the instance's
    // URL (from a URL schemathesis leaves out the operation that serves the document).
    let doc: Value = inst
        .http
        .get(format!("{}/api/openapi.json", inst.url))
        .send()
        .await
        .expect("document")
        .json()
        .await
        .expect("JSON");
    let n = operations(&doc).len();
    let report = TempDir::new("schemathesis");
    let file = report.0.join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("write the document");
    let out = tokio::process::Command::new(tools::schemathesis())
        .arg("run")
        .arg(&file)
        .args(["--url", &inst.url])
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--header",
            &format!("Authorization: Bearer {}", inst.key),
            "--max-examples",
            "25",
            "--seed",
            "20261203",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            "--generation-database",
            "none",
            "--no-color",
            "--report-dir",
        ])
        .arg(&report.0)
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(&report.0)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), out)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("schemathesis ran");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{text}\n--- kite's log:\n{}",
        inst.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    );
    // It really ran every operation (a run over an empty document would pass too).
    assert!(
        text.contains(&format!("{n} selected / {n} total")),
        "schemathesis did not test the {n} operations:\n{text}"
    );
}
