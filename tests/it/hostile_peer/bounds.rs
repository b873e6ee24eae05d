//! What a peer cannot grow, the order of checks, rate limits, revocation, and the CLI's quiet end.

use super::*;

#[tokio::test]
async fn junk_never_grows_what_kite_keeps() {
    let a = Instance::process_with("ja", &[]).await;
    let size_before = scrape(&a).await.len();
    let rss_before = rss(&a).await;
    // 3,000 hooks to as many made-up sources, half of them refused.
    let posts = futures::stream::iter(0..3000).map(|i| {
        let a = &a;
        async move {
            let body = if i % 2 == 0 {
                json!({"id": format!("junk_{i}"), "type": "x"}).to_string()
            } else {
                "{not json".to_string()
            };
            let r = a
                .http
                .post(format!("{}/hooks/default/junk-source-{i}", a.url))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post");
            r.status().as_u16()
        }
    });
    let statuses: Vec<u16> = posts.buffer_unordered(32).collect().await;
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1500);
    assert_eq!(statuses.iter().filter(|s| **s == 400).count(), 1500);
    // Genuine traffic at the same moment keeps its own label.
    let (s, _) = a
        .hook("stripe", &stripe_event("j_stripe", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);

    let text = scrape(&a).await;
    let series = text
        .lines()
        .filter(|l| l.starts_with("kite_ingest_total{"))
        .count();
    assert!(series <= 6, "{series} kite_ingest_total series:\n{text}");
    let other = |outcome| {
        value(
            &text,
            "kite_ingest_total",
            &[
                ("team", "default"),
                ("source", "other"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        (other("accepted"), other("rejected")),
        (Some(1500.0), Some(1500.0))
    );
    assert_eq!(
        value(
            &text,
            "kite_ingest_total",
            &[("source", "stripe"), ("outcome", "accepted")]
        ),
        Some(1.0)
    );
    assert!(
        text.len() < size_before + 32 * 1024,
        "/metrics grew from {size_before} to {} bytes",
        text.len()
    );
    assert!(rss(&a).await < rss_before + 64.0 * MIB);
}

#[tokio::test]
async fn policy_names_and_tokens_are_checked_before_anything_else() {
    let b = Instance::start("pb").await;
    let t = Instance::start("pt").await;
    admin(
        &b,
        &[
            "policy",
            "set",
            "--mode",
            "invite_only",
            "--allowed-peers",
            "ph,pt",
        ],
    )
    .await
    .ok();
    let h = HostilePeer::start("ph").await.expect("hostile");

    // Names that are no server names: refused, nothing stored.
    let inv = invitation(&b, &["*"]).await;
    for name in ["<img src=x onerror=alert(1)>".to_string(), "a".repeat(2048)] {
        let (s, v) = h.claiming(&name).join(&inv, &["*"]).await;
        assert_eq!((s, code(&v)), (400, "invalid_server_name"), "{v}");
    }
    // A wrong token is refused before the given URL is even looked at.
    let (s, v) = h
        .join_with(&inv, &["*"], |r| {
            r.token = "wrong".into();
            r.server.endpoints.base_url = "http://no-such-host.invalid".into();
        })
        .await;
    assert_eq!((s, code(&v)), (401, "invalid_invitation"), "{v}");
    // Claiming the allowed name `pt` with its own keys: the server at the URL it gives says
    // otherwise. Giving pt's URL: pt publishes other keys.
    let (s, v) = h.claiming("pt").join(&inv, &["*"]).await;
    assert_eq!((s, code(&v)), (401, "descriptor_mismatch"), "{v}");
    let (s, v) = h
        .claiming("pt")
        .join_with(&inv, &["*"], |r| {
            r.server.endpoints = kite_wire::peering::Endpoints::at(&t.url)
        })
        .await;
    assert_eq!((s, code(&v)), (401, "descriptor_mismatch"), "{v}");
    assert!(peer_of(&b, "pt").await.is_none() && peer_of(&b, "ph").await.is_none());
    // The invitation was not spent: the genuine pt takes it.
    peer_cmd(&t, &["accept", &inv, "--scopes", "*"]).await.ok();
    peer_of(&b, "pt").await.expect("pt peers with B");

    // H joins under its own name. Asked about pt with the key id pt publishes to anyone,
    // B says what it says of a server it does not know: H learns nothing of B's peers.
    let (s, v) = h.join(&invitation(&b, &["*"]).await, &["*"]).await;
    assert_eq!(s, 200, "{v}");
    let pt_key = keys_of(&t).await.remove(0).0.key_id;
    let (s1, v1) = h.key_query(at(&b), "pt", &pt_key).await;
    let (s2, v2) = h.key_query(at(&b), "nobody", &pt_key).await;
    assert_eq!((s1, code(&v1)), (404, "not_found"), "{v1}");
    assert_eq!((s2, code(&v2)), (404, "not_found"), "{v2}");
    // Once pt's own event went to H through B, B vouches for the key it was signed with.
    let (s, _) = t
        .hook("stripe", &stripe_event("p_to_h", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    eventually("pt's event at H", WAIT, || async {
        delivered_to(&h)
            .contains(&"p_to_h".to_string())
            .then_some(())
    })
    .await;
    let (s, v) = h.key_query(at(&b), "pt", &pt_key).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["keys"].as_array().map(Vec::len), Some(1));

    // Once the policy no longer names H, it is refused on every request, while pt is not.
    assert_eq!(h.heartbeat(at(&b), None, None).await.reply.0, 200);
    admin(&b, &["policy", "set", "--allowed-peers", "pt"])
        .await
        .ok();
    let sent = h.heartbeat(at(&b), None, None).await;
    assert_eq!(
        (sent.reply.0, code(&sent.reply.1)),
        (403, "peer_not_allowed"),
        "{:?}",
        sent.reply
    );
    let (s, v) = h.send_event(at(&b), &h.event(STRIPE, "p_after")).await;
    assert_eq!((s, code(&v)), (403, "peer_not_allowed"), "{v}");
    assert_eq!(b.count_events("p_after").await, 0);
    let (s, _) = t
        .hook("stripe", &stripe_event("p_genuine", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    holds(&b, "p_genuine").await;
}

#[tokio::test]
async fn a_peers_server_to_server_calls_are_rate_limited_by_peer_and_address() {
    let b = Instance::start_with(
        "lb",
        &[
            ("KITE_RATE_PEER_PER_SEC", "2"),
            ("KITE_RATE_PEER_BURST", "5"),
            ("KITE_HEARTBEAT_INTERVAL_SECS", "1"),
            ("KITE_HEARTBEAT_MISSES", "3"),
        ],
    )
    .await;
    let c = Instance::start_with("lc", FAST_HEARTBEATS).await;
    handshake(&b, &c, "*", "*").await;
    status_becomes(&b, "lc", "active").await;
    let h = joined(&b, "lh", "*").await;

    let mut limited = 0;
    for _ in 0..30 {
        let sent = h.heartbeat(at(&b), None, None).await;
        if sent.reply.0 == 429 {
            assert_eq!(code(&sent.reply.1), "rate_limited");
            limited += 1;
        }
    }
    assert!(limited >= 20, "{limited} of 30 limited");
    // Junk signed by nobody is charged to its address.
    let mut junk_limited = 0;
    for _ in 0..150 {
        let r = b
            .http
            .post(format!("{}/federation/v1/teams/default/heartbeat", b.url))
            .header("x-kite-server", "lh")
            .header("x-kite-key-id", "ed25519:0")
            .header("x-kite-destination", "lb")
            .body("{}")
            .send()
            .await
            .expect("post");
        if r.status() == 429 {
            junk_limited += 1;
        }
    }
    assert!(junk_limited > 0);
    // The genuine peer's heartbeats and events went on meanwhile.
    let (s, _) = c
        .hook("stripe", &stripe_event("l_genuine", "charge.succeeded"))
        .await;
    assert_eq!(s, 202);
    holds(&b, "l_genuine").await;
    assert_eq!(peer_of(&b, "lc").await.expect("peer")["status"], "active");
}

#[tokio::test]
async fn a_revocation_applies_before_it_is_answered_and_everywhere_within_the_bound() {
    let b = Instance::process_with("xb", &[]).await;
    // In the process that made it: every time, at once.
    for i in 0..40 {
        let name = format!("xh{i}");
        let h = joined(&b, &name, "*").await;
        let id = peer_of(&b, &name).await.expect("peer")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (s, v) = b
            .patch(
                &format!("/api/federation/peers/{id}"),
                json!({"status": "revoked"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let sent = h.heartbeat(at(&b), None, None).await;
        assert_eq!(
            (sent.reply.0, code(&sent.reply.1)),
            (403, "peer_revoked"),
            "try {i}: {:?}",
            sent.reply
        );
    }
    // In another process of the same instance: within the caches' bound.
    let other = Proc::start(&b, "ingress").await;
    let other_url = other.url.clone().expect("url");
    let h = joined(&b, "xlast", "*").await;
    assert_eq!(
        h.heartbeat((&other_url, "xb"), None, None).await.reply.0,
        200
    );
    let id = peer_of(&b, "xlast").await.expect("peer")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (s, _) = b
        .patch(
            &format!("/api/federation/peers/{id}"),
            json!({"status": "revoked"}),
        )
        .await;
    assert_eq!(s, 200);
    let bound = kite_store::cache::MAX_AGE + Duration::from_secs(2);
    eventually(
        "the other process refuses the revoked peer",
        bound,
        || async {
            (h.heartbeat((&other_url, "xb"), None, None).await.reply.0 == 403).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kite_admin_into_head_ends_quietly() {
    let a = Instance::process_with("ha", &[]).await;
    for i in 0..300 {
        let (s, _) = a
            .hook(
                "stripe",
                &stripe_event(&format!("head_{i}"), "charge.succeeded"),
            )
            .await;
        assert_eq!(s, 202);
    }
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kite"))
        .args([
            "admin",
            "--instance",
            &a.url,
            "--api-key",
            &a.key,
            "events",
            "--limit",
            "1000",
            "--output",
            "json",
        ])
        .env("HOME", "/nonexistent")
        .env_remove("KITE_INSTANCE")
        .env_remove("KITE_API_KEY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kite admin");
    // `| head -1`: one line read, then the pipe closed.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let first = lines.next_line().await.expect("read").expect("a line");
    assert_eq!(first.trim(), "{");
    drop(lines);
    let out = child.wait_with_output().await.expect("exit");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn a_backfill_page_reads_no_more_history_than_one_page_holds() {
    // However many events a policy lets one backfill request answer, serving a page loads
    // only the rows that start within a page's bytes.
    let a = Instance::start("history").await;
    let filler = "x".repeat(100_000);
    for i in 0..10 {
        let mut e = stripe_event(&format!("evt_big_{i}"), "charge.succeeded");
        e["data"]["object"]["filler"] = json!(filler);
        let (s, v) = a.hook("stripe", &e).await;
        assert_eq!(s, 202, "{v}");
    }
    let store = kite_store::Store::connect(&a.db_url(), 2)
        .await
        .expect("store");
    let (rows, cut) = store
        .history("default", 0, None, 1000, 350_000)
        .await
        .expect("history");
    // About 100 KB an event: four start within 350 KB; the bound cut the page short.
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(seqs.len(), 4, "{seqs:?}");
    assert!(cut);
    // One event larger than the bound still makes a page.
    let (rows, cut) = store
        .history("default", 0, None, 1000, 10)
        .await
        .expect("history");
    assert_eq!((rows.len(), cut), (1, true));
    // Within the bound, the row limit decides, and nothing is cut.
    let (rows, cut) = store
        .history("default", 0, None, 1000, 100_000_000)
        .await
        .expect("history");
    assert_eq!((rows.len(), cut), (10, false));
    let (rows, cut) = store
        .history("default", seqs[3], None, 2, 100_000_000)
        .await
        .expect("history");
    assert_eq!((rows.len(), cut), (2, false));
    assert!(rows.iter().all(|r| r.seq > seqs[3]));
}
