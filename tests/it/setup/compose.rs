//! `docker-compose.yml` is coherent without a Docker engine: every kite service sets only
//! settings kite knows, names the URL the other reaches it at, and `scripts/peer.sh` (its
//! one-shot `peering` service) peers two instances by invitation, as the demo does.

use super::*;
use clap::Args as _;
use serde_json::Value;

/// Every environment variable `kite serve` reads.
fn known_settings() -> Vec<String> {
    let cmd = kite::settings::Settings::augment_args(clap::Command::new("serve"));
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The compose file as JSON, read with PyYAML (from the test tools' Python).
fn compose() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml");
    let out = Command::new(tools::python())
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("compose as JSON")
}

#[test]
fn every_kite_service_in_the_compose_file_sets_known_settings_and_its_public_url() {
    let known = known_settings();
    assert!(known.contains(&"KITE_PUBLIC_URL".to_string()), "{known:?}");
    let c = compose();
    let services = c["services"].as_object().expect("services");
    let kites: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(_, s)| s["command"] == serde_json::json!(["serve"]))
        .collect();
    assert_eq!(kites.len(), 2, "instance-a and instance-b");
    let mut databases = Vec::new();
    for (name, s) in &kites {
        let env = s["environment"].as_object().expect("environment");
        for k in env.keys() {
            assert!(
                known.contains(k),
                "{name} sets {k}, which kite serve does not read"
            );
        }
        let port = env["KITE_PORT"].as_str().expect("KITE_PORT");
        assert_eq!(
            env["KITE_PUBLIC_URL"].as_str(),
            Some(format!("http://{name}:{port}").as_str()),
            "{name} advertises the address the other instance reaches it at"
        );
        assert_eq!(env["KITE_INSTANCE_ID"].as_str(), Some(name.as_str()));
        databases.push(env["KITE_DATABASE_URL"].as_str().expect("db").to_owned());
    }
    databases.dedup();
    assert_eq!(databases.len(), 2, "a database each: {databases:?}");

    // The peering service reaches both at those URLs, with their admin keys.
    let p = services["peering"]["environment"]
        .as_object()
        .expect("peering env");
    for (letter, name) in [("A", "instance-a"), ("B", "instance-b")] {
        let env = &services[name]["environment"];
        assert_eq!(p[&format!("{letter}_URL")], env["KITE_PUBLIC_URL"]);
        assert_eq!(p[&format!("{letter}_KEY")], env["KITE_ADMIN_KEY"]);
    }
    assert_eq!(p["A_NAME"], "instance-a");
}

#[tokio::test]
async fn peer_script_peers_two_instances_by_invitation_once() {
    let a = Instance::start("compose-a").await;
    let b = Instance::start("compose-b").await;
    let run = || {
        Command::new("sh")
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/peer.sh"))
            .env("A_URL", &a.url)
            .env("B_URL", &b.url)
            .env("A_KEY", &a.key)
            .env("B_KEY", &b.key)
            .env("A_NAME", &a.name)
            .env("B_NAME", &b.name)
            .env("SCOPES", "[\"stripe.*\"]")
            .output()
            .expect("run scripts/peer.sh")
    };
    let out = run();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("peered by invitation"), "{said}");

    // Each side holds the other, made by the handshake (server names, keys pinned).
    let (_, pa) = a.get("/api/federation/peers").await;
    let (_, pb) = b.get("/api/federation/peers").await;
    assert_eq!(pa["items"][0]["server_name"], b.name.as_str(), "{pa}");
    assert_eq!(pb["items"][0]["server_name"], a.name.as_str(), "{pb}");

    // An event at A reaches B.
    let (s, v) = a
        .hook("stripe", &stripe_event("evt_compose_1", "charge.succeeded"))
        .await;
    assert_eq!(s, 202, "{v}");
    eventually("the event at B", common::hostile::WAIT, || async {
        b.event("evt_compose_1").await.map(|_| ())
    })
    .await;

    // Run again: the peering is left as it is.
    let out = run();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.contains("left as it is"),
        "{said}"
    );
    let (_, pb) = b.get("/api/federation/peers").await;
    assert_eq!(pb["items"].as_array().map(Vec::len), Some(1), "{pb}");
}
