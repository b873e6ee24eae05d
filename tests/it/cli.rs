//! `kite admin` end to end: a whole peering of two instances done with `kite` commands only
//! (no curl, no admin client), and the errors a person gets for a wrong URL or key.

use crate::common;

use std::time::Duration;

use common::cli::*;
use common::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// The stored event with CloudEvent id `id`, as `kite admin events list` shows it.
async fn listed_event(inst: &Instance, id: &str) -> Option<Value> {
    let page = admin_json(inst, &["events", "list", "--limit", "1000"]).await;
    page["items"]
        .as_array()?
        .iter()
        .find(|e| e["event"]["id"] == id)
        .cloned()
}

/// The outbox row of event `id` in `status`, as `kite admin outbox` shows it.
async fn outbox_row(inst: &Instance, peer: &str, id: &str, status: &str) -> Option<Value> {
    let page = admin_json(
        inst,
        &["outbox", "list", "--peer", peer, "--status", status],
    )
    .await;
    page["items"]
        .as_array()?
        .iter()
        .find(|r| r["event_id"] == id)
        .cloned()
}

/// The `key: value` line of `key` in table output.
fn field<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_whole_peering_with_kite_commands_only() {
    let a = Instance::start_with("instance-a", &[("KITE_PEER_FAILURE_THRESHOLD", "1000")]).await;
    let b = Instance::start("instance-b").await;
    let hook_url = format!("{}/hooks/default/kite", b.url);

    // On B: a token for A (no label needed), trusted as instance-a.
    let t = admin_json(&b, &["tokens", "create"]).await;
    let token = t["token"].as_str().expect("token shown once").to_owned();
    assert_eq!(t["label"], "", "{t}");
    let s = admin_json(
        &b,
        &[
            "trusted-senders",
            "create",
            "--name",
            "instance-a",
            "--token",
            &token,
        ],
    )
    .await;
    assert_eq!(s["name"], "instance-a", "{s}");
    let listed = admin(&b, &["tokens", "list"]).await.ok().out;
    assert!(listed.starts_with("ID "), "{listed}");
    assert!(!listed.contains(&token), "listings never show the secret");

    // On A: the peer, for Stripe payment intents.
    let p = admin_json(
        &a,
        &[
            "peers",
            "create",
            "--name",
            "instance-b",
            "--url",
            &hook_url,
            "--token",
            &token,
            "--scope",
            "stripe.payment_intent.*",
            "--max-hops",
            "2",
        ],
    )
    .await;
    let peer_id = p["id"].as_str().expect("peer id").to_owned();
    assert_eq!(
        (&p["max_hops"], &p["scopes"][0], &p["status"]),
        (
            &Value::from(2),
            &Value::from("stripe.payment_intent.*"),
            &Value::from("active")
        ),
        "{p}"
    );
    let table = admin(&a, &["peers"]).await.ok().out;
    let row = table
        .lines()
        .find(|l| l.contains("instance-b"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        table.starts_with("ID ") && row.contains(&peer_id) && row.contains("active"),
        "{table}"
    );

    // A webhook at A arrives at B, as B's event listing shows.
    let ev = stripe_event("evt_cli_1", "payment_intent.succeeded");
    assert_eq!(a.hook("stripe", &ev).await.0, 202);
    let got = eventually("evt_cli_1 at B", WAIT, || listed_event(&b, "evt_cli_1")).await;
    assert_eq!(got["event"]["kitefedorigin"], "instance-a", "{got}");
    // Its story: the event, where it came from, and what happened for each peer of B.
    let shown = admin(&b, &["events", "show", "evt_cli_1"]).await.ok().out;
    assert!(
        shown.starts_with("event evt_cli_1 (seq ")
            && shown.contains("type com.stripe.payment_intent.succeeded")
            && shown.contains("federated: origin instance-a, chain instance-a, hops 1"),
        "{shown}"
    );
    let seq = got["seq"].as_i64().expect("seq").to_string();
    let by_seq = admin_json(&b, &["events", "show", &seq]).await;
    assert_eq!(by_seq["event"]["id"], "evt_cli_1");

    // Paused: the next event waits at A; resumed: it arrives.
    let paused = admin_json(&a, &["peers", "pause", "instance-b"]).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    assert_eq!(
        a.hook(
            "stripe",
            &stripe_event("evt_cli_2", "payment_intent.created")
        )
        .await
        .0,
        202
    );
    eventually("evt_cli_2 held at A", WAIT, || {
        outbox_row(&a, "instance-b", "evt_cli_2", "pending")
    })
    .await;
    let shown = admin(&a, &["peers", "show", &peer_id]).await.ok().out;
    assert_eq!(field(&shown, "status"), Some("paused"), "{shown}");
    assert_eq!(field(&shown, "pending"), Some("1"), "{shown}");
    assert_eq!(b.count_events("evt_cli_2").await, 0);
    let resumed = admin_json(&a, &["peers", "resume", "instance-b"]).await;
    assert_eq!(resumed["status"], "active", "{resumed}");
    eventually("evt_cli_2 at B", WAIT, || async {
        let r = admin(&b, &["events", "show", "evt_cli_2", "--output", "json"]).await;
        (r.code == Some(0)).then(|| r.json())
    })
    .await;
    let delivered = admin_json(&a, &["outbox", "--status", "delivered"]).await;
    let ids: Vec<&Value> = delivered["items"]
        .as_array()
        .map(|v| v.iter().map(|r| &r["event_id"]).collect())
        .unwrap_or_default();
    assert!(
        ids.contains(&&Value::from("evt_cli_1")) && ids.contains(&&Value::from("evt_cli_2")),
        "{delivered}"
    );

    // Dead rows: a second peer whose token B does not trust yet (401: no attempt succeeds).
    let late = admin_json(&b, &["tokens", "create", "--label", "late"]).await;
    let late_token = late["token"].as_str().expect("token").to_owned();
    admin_json(
        &a,
        &[
            "peers",
            "create",
            "--name",
            "late",
            "--url",
            &hook_url,
            "--token",
            &late_token,
            "--scope",
            "stripe.invoice.*",
        ],
    )
    .await;
    assert_eq!(
        a.hook("stripe", &stripe_event("evt_cli_3", "invoice.paid"))
            .await
            .0,
        202
    );
    let dead = eventually("evt_cli_3 dead at A", WAIT, || {
        outbox_row(&a, "late", "evt_cli_3", "dead")
    })
    .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    let table = admin(&a, &["outbox", "--status", "dead"]).await.ok().out;
    assert!(
        table.contains("evt_cli_3") && table.contains("dead"),
        "{table}"
    );
    admin_json(
        &b,
        &[
            "trusted-senders",
            "create",
            "--name",
            "instance-a-late",
            "--token",
            &late_token,
        ],
    )
    .await;
    let replayed = admin_json(&a, &["peers", "replay-dead", "late"]).await;
    assert_eq!(replayed["replayed"], 1, "{replayed}");
    eventually("evt_cli_3 at B", WAIT, || listed_event(&b, "evt_cli_3")).await;
    eventually("evt_cli_3 delivered at A", WAIT, || {
        outbox_row(&a, "late", "evt_cli_3", "delivered")
    })
    .await;

    // Update any field; then delete both peers and a trusted sender.
    let updated = admin_json(
        &a,
        &[
            "peers",
            "update",
            "late",
            "--max-hops",
            "5",
            "--scope",
            "stripe.invoice.*",
            "--scope",
            "stripe.charge.*",
        ],
    )
    .await;
    assert_eq!(
        (
            &updated["max_hops"],
            updated["scopes"].as_array().map(Vec::len)
        ),
        (&Value::from(5), Some(2)),
        "{updated}"
    );
    for peer in ["late", peer_id.as_str()] {
        let d = admin_json(&a, &["peers", "delete", peer]).await;
        assert_eq!(d["deleted"], true, "{d}");
    }
    assert_eq!(
        admin_json(&a, &["peers", "list"]).await["items"],
        Value::Array(vec![])
    );
    let gone = admin(&a, &["peers", "show", "late"]).await;
    assert_ne!(gone.code, Some(0));
    assert!(
        gone.err.contains("no peer with id or name \"late\""),
        "{gone:?}"
    );
    let d = admin(&b, &["trusted-senders", "delete", "instance-a"])
        .await
        .ok()
        .out;
    assert_eq!(field(&d, "deleted"), Some("true"), "{d}");
    let left = admin_json(&b, &["trusted-senders"]).await;
    let names: Vec<&Value> = left["items"]
        .as_array()
        .map(|v| v.iter().map(|s| &s["name"]).collect())
        .unwrap_or_default();
    assert_eq!(names, [&Value::from("instance-a-late")], "{left}");
}

#[tokio::test]
async fn keys_sources_the_config_file_and_errors_that_name_the_fix() {
    // Before any instance: a URL without a scheme, or with a path, names the root to use.
    let port = free_port();
    let root = format!("http://127.0.0.1:{port}");
    let r = kite(&[
        "admin",
        "--instance",
        &format!("127.0.0.1:{port}"),
        "--api-key",
        "k",
        "peers",
    ])
    .await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.err.contains("http(s)://") && r.err.contains(&format!("--instance {root}")),
        "{r:?}"
    );
    let r = kite(&[
        "admin",
        "--instance",
        &format!("{root}/api"),
        "--api-key",
        "k",
        "peers",
    ])
    .await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.err.contains("root") && r.err.contains(&format!("--instance {root}")),
        "{r:?}"
    );
    let r = kite(&["admin", "--instance", &root, "--api-key", "k", "peers"]).await;
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.err.contains(&root) && r.err.contains("Connection refused"),
        "{r:?}"
    );
    let r = kite(&["admin", "--instance", &root, "peers"]).await;
    assert!(r.code == Some(1) && r.err.contains("--api-key"), "{r:?}");

    let a = Instance::start("instance-a").await;
    let wrong = kite(&[
        "admin",
        "--instance",
        &a.url,
        "--api-key",
        "kite_00000000_00000000000000000000000000000000",
        "keys",
    ])
    .await;
    assert_eq!(wrong.code, Some(2), "{wrong:?}");
    assert!(
        wrong
            .err
            .contains("the instance refused the API key; check --api-key / KITE_API_KEY"),
        "{wrong:?}"
    );

    // Keys: no label needed; listed by prefix; revoked.
    let k = admin_json(&a, &["keys", "create"]).await;
    let (key_id, secret) = (
        k["id"].as_str().expect("id"),
        k["key"].as_str().expect("key"),
    );
    assert_eq!(
        (&k["permission"], &k["label"]),
        (&Value::from("read"), &Value::from("")),
        "{k}"
    );
    let labelled = admin(
        &a,
        &["keys", "create", "--permission", "admin", "--label", "ci"],
    )
    .await
    .ok();
    assert_eq!(field(&labelled.out, "label"), Some("ci"), "{labelled:?}");
    assert!(labelled.err.contains("not shown again"), "{labelled:?}");
    let listed = admin(&a, &["keys", "list"]).await.ok().out;
    assert!(
        listed.contains(key_id) && !listed.contains(secret),
        "{listed}"
    );
    let revoked = admin_json(&a, &["keys", "revoke", key_id]).await;
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // Sources: create, list, rotate, delete.
    let s = admin_json(
        &a,
        &[
            "sources",
            "create",
            "--name",
            "shop",
            "--scheme",
            "hmac-sha256",
            "--secret",
            "s1",
            "--header",
            "X-Shop-Signature",
        ],
    )
    .await;
    assert_eq!(
        (&s["scheme"], &s["header"]),
        (
            &Value::from("hmac-sha256"),
            &Value::from("x-shop-signature")
        ),
        "{s}"
    );
    let listed = admin(&a, &["sources"]).await.ok().out;
    assert!(
        listed.contains("shop") && !listed.contains("s1 "),
        "{listed}"
    );
    let rotated = admin_json(&a, &["sources", "rotate", "shop", "--secret", "s2"]).await;
    assert!(rotated["previous_until"].is_string(), "{rotated}");
    assert_eq!(
        admin_json(&a, &["sources", "delete", "shop"]).await["deleted"],
        true
    );
    assert_eq!(
        admin_json(&a, &["sources", "list"]).await["items"],
        Value::Array(vec![])
    );
    let refused = admin(
        &a,
        &[
            "sources", "create", "--name", "kite", "--scheme", "stripe", "--secret", "x",
        ],
    )
    .await;
    assert!(
        refused.code == Some(1) && refused.err.contains("validation"),
        "{refused:?}"
    );

    // The config file `kite listen` reads gives the instance and the key.
    let home = std::env::temp_dir().join(format!("kite-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(home.join(".config/kite")).expect("config dir");
    std::fs::write(
        home.join(".config/kite/config.toml"),
        format!("instance = \"{}\"\napi_key = \"{}\"\n", a.url, a.key),
    )
    .expect("config file");
    let r = kite_in(&home, &["admin", "tokens", "create", "--output", "json"])
        .await
        .ok();
    assert!(r.json()["token"].is_string(), "{r:?}");
    let _ = std::fs::remove_dir_all(&home);
}
