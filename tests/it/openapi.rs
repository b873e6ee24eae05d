//! The OpenAPI document (`/api/openapi.json`): it names every route kite serves and only
//! those; openapi-spec-validator finds nothing wrong with it; a Python client generated from
//! it by openapi-python-client imports whole and works against a live instance; and
//! schemathesis, fuzzing a live instance from it, finds no server error and no answer that
//! does not fit it.

use crate::common;

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

/// What the test does with the client generated from the document: imports every module,
/// then creates a paused peer, posts a hook (the peer's row waits) and lists the outbox.
/// Prints one JSON line of what each call answered.
const USE_GENERATED_CLIENT: &str = r#"
import importlib, json, pkgutil, sys

import kite_client
from kite_client import AuthenticatedClient
from kite_client.api.events import list_outbox
from kite_client.api.hooks import receive
from kite_client.api.peers import create_peer
from kite_client.models import NewPeer, ReceiveJsonBody

modules = [m.name for m in pkgutil.walk_packages(kite_client.__path__, "kite_client.")]
for name in modules:
    importlib.import_module(name)

client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2])
peer = create_peer.sync_detailed(client=client, body=NewPeer.from_dict({
    "name": "generated", "peer_hook_url": "http://127.0.0.1:9/hooks/default/kite",
    "outbound_token": "t0ken", "status": "paused"}))
hook = receive.sync_detailed(team="default", source="orders", client=client,
    body=ReceiveJsonBody.from_dict({"id": "evt_generated_1", "type": "order.made"}))
outbox = list_outbox.sync_detailed(client=client, peer="generated")
print(json.dumps({
    "modules": modules,
    "peer": [peer.status_code, getattr(peer.parsed, "name", None)],
    "hook": [hook.status_code, getattr(getattr(hook.parsed, "status", None), "value", None)],
    "outbox": [outbox.status_code,
               [getattr(getattr(i, "status", None), "value", None)
                for i in (getattr(outbox.parsed, "items", None) or [])]],
}))
"#;

#[tokio::test]
async fn the_document_validates_and_a_client_generated_from_it_works() {
    // Ingress and router only: the peer is paused anyway, nothing is delivered.
    let inst = Instance::start_with("oagen", &[("KITE_ROLES", "ingress,router")]).await;
    let dir = TempDir::new("openapi-client");
    let doc = inst
        .http
        .get(format!("{}/api/openapi.json", inst.url))
        .send()
        .await
        .expect("GET /api/openapi.json")
        .text()
        .await
        .expect("the document");
    let path = dir.0.join("openapi.json");
    std::fs::write(&path, &doc).expect("write the document");
    let doc: Value = serde_json::from_str(&doc).expect("JSON");

    // The hook names every body it takes.
    let bodies = doc["paths"]["/hooks/{team}/{source}"]["post"]["requestBody"]["content"]
        .as_object()
        .expect("the hook's bodies");
    for media in [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/x-www-form-urlencoded",
        "application/octet-stream",
    ] {
        assert!(bodies.contains_key(media), "the hook does not list {media}");
    }

    let run = |cmd: std::path::PathBuf, args: Vec<std::ffi::OsString>| {
        let out = std::process::Command::new(&cmd)
            .args(&args)
            .current_dir(&dir.0)
            .env("PYTHONPATH", dir.0.join("client"))
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", cmd.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    let (ok, text) = run(tools::openapi_spec_validator(), vec![path.clone().into()]);
    assert!(
        ok && text.trim_end().ends_with("OK"),
        "openapi-spec-validator: {text}"
    );

    std::fs::write(dir.0.join("generator.yaml"), "post_hooks: []\n").expect("config");
    let (ok, text) = run(
        tools::openapi_python_client(),
        [
            "generate",
            "--path",
            "openapi.json",
            "--output-path",
            "client",
            "--config",
            "generator.yaml",
        ]
        .map(std::ffi::OsString::from)
        .to_vec(),
    );
    assert!(
        ok && !text.to_lowercase().contains("warning"),
        "openapi-python-client generated with warnings: {text}"
    );

    let (ok, text) = run(
        tools::python(),
        vec![
            "-c".into(),
            USE_GENERATED_CLIENT.into(),
            inst.url.clone().into(),
            inst.key.clone().into(),
        ],
    );
    assert!(ok, "the generated client: {text}");
    let answer: Value = serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {text}"));
    let modules = answer["modules"].as_array().expect("modules");
    for m in [
        "kite_client.api.peers.create_peer",
        "kite_client.api.events.list_outbox",
        "kite_client.api.hooks.receive",
        "kite_client.models.cloud_event",
    ] {
        assert!(
            modules.iter().any(|n| n == m),
            "{m} not generated: {answer}"
        );
    }
    assert_eq!(
        answer["peer"],
        serde_json::json!([201, "generated"]),
        "{answer}"
    );
    assert_eq!(
        answer["hook"],
        serde_json::json!([202, "accepted"]),
        "{answer}"
    );
    assert_eq!(
        answer["outbox"],
        serde_json::json!([200, ["pending"]]),
        "{answer}"
    );
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_every_answer_fits_the_document() {
    // Ingress and router only: nothing the fuzzer makes is ever delivered anywhere.
    let inst = Instance::process_with("st", &[("KITE_ROLES", "ingress,router")]).await;
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
