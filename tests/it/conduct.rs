//! How deliveries to a peer go: its own delivery policy (a throttled peer measured at the
//! receiver), ordered delivery by a key across two delivery processes and a SIGKILL, and
//! binary content mode read by the official Standard Webhooks library and the CloudEvents
//! Python SDK.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

use common::cli::{admin, peer_cmd};
use common::hostile::WAIT;
use common::*;
use serde_json::{json, Value};

/// Serves `app` on a free loopback port; answers its URL.
async fn serve_on_loopback(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind receiver");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// One request a receiver took.
#[derive(Clone)]
struct Took {
    at: Instant,
    /// The CloudEvent id: the body's `id`, or the `ce-id` header in binary mode.
    id: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// What it answered.
    ok: bool,
}

/// A plain HTTP receiver on loopback: records every request, answers 503 for the ids in
/// `failing`, else 200.
struct Receiver {
    url: String,
    took: Arc<Mutex<Vec<Took>>>,
    failing: Arc<Mutex<HashSet<String>>>,
}

impl Receiver {
    async fn start() -> Self {
        let took: Arc<Mutex<Vec<Took>>> = Arc::default();
        let failing: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (t, f) = (took.clone(), failing.clone());
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (t, f) = (t.clone(), f.clone());
                async move {
                    let id = headers
                        .get("ce-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .or_else(|| {
                            serde_json::from_slice::<Value>(&body)
                                .ok()
                                .and_then(|v| v["id"].as_str().map(str::to_owned))
                        })
                        .unwrap_or_default();
                    let headers = headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect();
                    let fail = f.lock().expect("lock").contains(&id);
                    t.lock().expect("lock").push(Took {
                        at: Instant::now(),
                        id,
                        headers,
                        body: body.to_vec(),
                        ok: !fail,
                    });
                    if fail {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            },
        );
        let url = serve_on_loopback(app).await;
        Self { url, took, failing }
    }

    /// Every request it took, in order of arrival.
    fn all(&self) -> Vec<Took> {
        self.took.lock().expect("lock").clone()
    }

    /// The ids it took at least once.
    fn ids(&self) -> HashSet<String> {
        self.took
            .lock()
            .expect("lock")
            .iter()
            .map(|t| t.id.clone())
            .collect()
    }
}

/// A receiver that holds every request until it is opened, counting how many it holds at
/// once: a peer that answers slowly, as kite sees it.
struct Holding {
    url: String,
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    ids: Arc<Mutex<Vec<String>>>,
    open: tokio::sync::watch::Sender<bool>,
}

/// A held request, counted out when it ends however it ends.
struct Out(Arc<AtomicUsize>);

impl Drop for Out {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Holding {
    async fn start() -> Self {
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let ids: Arc<Mutex<Vec<String>>> = Arc::default();
        let (open, opened) = tokio::sync::watch::channel(false);
        let (n, p, took) = (now.clone(), peak.clone(), ids.clone());
        let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
            let (n, p, took, mut opened) = (n.clone(), p.clone(), took.clone(), opened.clone());
            async move {
                let held = n.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(held, Ordering::SeqCst);
                // Counted out even if kite gives up and the request is dropped.
                let _out = Out(n.clone());
                let _ = opened.wait_for(|o| *o).await;
                let id = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                took.lock().expect("lock").push(id);
                axum::http::StatusCode::OK
            }
        });
        let url = serve_on_loopback(app).await;
        Self {
            url,
            now,
            peak,
            ids,
            open,
        }
    }
}

/// Posts a structured CloudEvent to `/hooks/default/acme`; answers its sequence number.
async fn post_ce(http: &reqwest::Client, url: &str, ce: &Value) -> i64 {
    let r = http
        .post(format!("{url}/hooks/default/acme"))
        .header("content-type", "application/cloudevents+json")
        .body(ce.to_string())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    let v: Value = r.json().await.expect("answer");
    v["seq"].as_i64().unwrap_or_else(|| panic!("a seq in {v}"))
}

/// Makes a token peer `name` whose hook is at the receiver at `url`, with a delivery
/// policy when one is given; answers its id.
async fn peer_at(a: &Instance, name: &str, url: &str, policy: Option<Value>) -> String {
    let mut body = json!({"name": name, "outbound_token": "t",
                          "peer_hook_url": format!("{url}/hooks/default/kite")});
    if let Some(p) = policy {
        body["delivery"] = p;
    }
    let (s, v) = a.post("/api/federation/peers", body).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().expect("id").to_string()
}

/// Settings under which the sweeper takes a delivery waiting at a slow peer (of one
/// request in flight) for lost within a second, and logs it.
const SWEPT_SOON: [(&str, &str); 6] = [
    ("KITE_PEER_MAX_IN_FLIGHT", "1"),
    ("KITE_REQUEST_TIMEOUT_MS", "60000"),
    ("KITE_DELIVERY_LEASE_MS", "500"),
    ("KITE_SWEEP_GRACE_MS", "500"),
    ("KITE_SWEEP_INTERVAL_MS", "200"),
    ("RUST_LOG", "warn,kite_route=info"),
];

/// Posts `n` plain CloudEvents (`{prefix}0`, `{prefix}1`, ...) one request and one commit
/// each, so that each is its own handoff.
async fn post_plain(a: &Instance, prefix: &str, n: usize) {
    for i in 0..n {
        post_ce(
            &a.http,
            &a.url,
            &json!({"specversion": "1.0", "id": format!("{prefix}{i}"), "source": "/acme",
                    "type": "com.acme.x", "data": {}}),
        )
        .await;
    }
}

/// However slowly a peer answers, it holds at most its `max_in_flight` requests from one
/// process, and without one the instance's `KITE_PEER_MAX_IN_FLIGHT` (256 unless set):
/// the connections kite keeps to a peer, and their memory, stay bounded.
#[tokio::test]
async fn a_slow_peer_holds_at_most_its_requests_in_flight_or_the_instances() {
    let (plain, two) = (Holding::start().await, Holding::start().await);
    // Requests held longer than the suite's 3 s timeout would be retried and add to the
    // count: this one waits as long as the test may.
    let a = Instance::start_with(
        "conduct-in-flight",
        &[
            ("KITE_PEER_MAX_IN_FLIGHT", "4"),
            ("KITE_REQUEST_TIMEOUT_MS", "60000"),
        ],
    )
    .await;
    peer_at(&a, "plain", &plain.url, None).await;
    peer_at(&a, "two", &two.url, Some(json!({"max_in_flight": 2}))).await;
    // One event a commit: each its own handoff, so unbounded the 20 would go at once.
    let n = 20;
    post_plain(&a, "f", n).await;
    eventually("each peer holding its bound", WAIT, || async {
        let held = |h: &Holding| h.now.load(Ordering::SeqCst);
        (held(&plain) == 4 && held(&two) == 2).then_some(())
    })
    .await;
    for h in [&plain, &two] {
        h.open.send_replace(true);
    }
    eventually("every event at both peers", WAIT, || async {
        let took = |h: &Holding| h.ids.lock().expect("lock").len();
        (took(&plain) == n && took(&two) == n).then_some(())
    })
    .await;
    for h in [&plain, &two] {
        let ids: HashSet<String> = h.ids.lock().expect("lock").iter().cloned().collect();
        assert_eq!(ids.len(), n, "each event once: {ids:?}");
    }
    assert_eq!(
        (
            plain.peak.load(Ordering::SeqCst),
            two.peak.load(Ordering::SeqCst)
        ),
        (4, 2)
    );
}

/// Messages (ready and unacknowledged) in the broker queues whose names start with
/// `prefix`, as this machine's broker counts them (in the tests' virtual host).
async fn queued(prefix: &str) -> u64 {
    let url = amqp_url();
    let vhost = match url.split('?').next().and_then(|u| u.rsplit_once('/')) {
        Some((_, v)) if !v.is_empty() && !v.contains('@') => {
            v.replace("%2f", "/").replace("%2F", "/")
        }
        _ => "/".to_string(),
    };
    let list = kite_kit::cmd::output(tokio::process::Command::new("rabbitmqctl").args([
        "-q",
        "list_queues",
        "-p",
        &vhost,
        "--no-table-headers",
        "name",
        "messages",
    ]))
    .await
    .expect("rabbitmqctl list_queues");
    list.lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(name, _)| name.starts_with(prefix))
        .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
        .sum()
}

/// Deliveries waiting for a slow peer's gate stay pending past their due time, so the
/// sweeper takes them for lost and publishes them again, again and again while they wait.
/// The process holding them drops those messages instead of posting the events a second
/// time: the peer gets each event once. Here the deliveries came by the local lane (one
/// process with every role).
#[tokio::test]
async fn deliveries_waiting_for_a_slow_peer_are_not_sent_again_when_the_sweeper_finds_them() {
    sent_once_though_swept(false).await;
}

/// The same for deliveries that came through the broker (delivery in a process of its
/// own, so there is no local lane): the first message and the sweeper's repeats meet in
/// the same consumer.
#[tokio::test]
async fn queued_deliveries_waiting_for_a_slow_peer_are_not_sent_again_when_swept() {
    sent_once_though_swept(true).await;
}

async fn sent_once_though_swept(split: bool) {
    let rx = Holding::start().await;
    let mut env = SWEPT_SOON.to_vec();
    if split {
        env.push(("KITE_ROLES", "ingress,router"));
    }
    let a = Instance::process_with("conduct-swept", &env).await;
    let _delivery = match split {
        true => Some(Proc::start(&a, "delivery").await),
        false => None,
    };
    peer_at(&a, "slow", &rx.url, None).await;
    let n = 6;
    post_plain(&a, "s", n).await;
    // They went the way this variant is about.
    let lane = if split { "broker" } else { "local" };
    metrics::reaches(
        &a,
        "kite_deliveries_handed_total",
        &[("lane", lane)],
        n as f64,
    )
    .await;
    // The peer holds one request; the other five wait at its gate while the sweeper
    // publishes all six again, three times over.
    let swept = || {
        a.logs
            .lock()
            .map(|l| {
                l.iter()
                    .filter(|l| l.contains("sweeper republishes overdue deliveries"))
                    .count()
            })
            .unwrap_or(0)
    };
    eventually("three sweeps of the waiting deliveries", WAIT, || async {
        (swept() >= 3).then_some(())
    })
    .await;
    assert_eq!(
        rx.now.load(Ordering::SeqCst),
        1,
        "the gate lets one through"
    );
    rx.open.send_replace(true);
    eventually(
        "every event delivered, nothing left queued",
        WAIT,
        || async {
            let delivered = a.outbox("status=delivered").await.len();
            (delivered == n && queued(&a.prefix).await == 0 && rx.now.load(Ordering::SeqCst) == 0)
                .then_some(())
        },
    )
    .await;
    let mut took = rx.ids.lock().expect("lock").clone();
    took.sort();
    let once: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    assert_eq!(took, once, "each event once");
}

/// The sweeper leaves alone the rows of a peer whose deliveries are claimed for its own
/// retry schedule, as it does those of ordered and throttled peers: its worker claims them
/// when they are due, and a sweep would only push them back a grace and ring its doorbell.
/// A plain peer, as slow, is the control: once the sweeper has found its rows, it has
/// looked at the other's too.
#[tokio::test]
async fn the_sweeper_leaves_the_rows_of_a_peer_with_its_own_retry_schedule_alone() {
    let (own, plain) = (Holding::start().await, Holding::start().await);
    let a = Instance::process_with("conduct-sweep-claimed", &SWEPT_SOON).await;
    let own_id = peer_at(&a, "own", &own.url, Some(json!({"retry_base_ms": 100}))).await;
    peer_at(&a, "plain", &plain.url, None).await;
    let n = 3;
    post_plain(&a, "c", n).await;
    eventually("the control's rows swept", WAIT, || async {
        let logs = a.logs.lock().map(|l| l.join("\n")).unwrap_or_default();
        logs.contains("sweeper republishes overdue deliveries")
            .then_some(())
    })
    .await;
    // The peer's worker claimed one row (its one request in flight); the other two are
    // still due as routing wrote them, not a grace later.
    let rows = a.outbox(&format!("peer_id={own_id}")).await;
    assert_eq!(rows.len(), n, "{rows:?}");
    let at = |r: &Value, k: &str| {
        chrono::DateTime::parse_from_rfc3339(r[k].as_str().unwrap_or_default()).expect(k)
    };
    let untouched = rows
        .iter()
        .filter(|r| {
            at(r, "next_attempt_at") - at(r, "created_at") < chrono::Duration::milliseconds(400)
        })
        .count();
    assert_eq!(untouched, n - 1, "{rows:?}");
    assert_eq!(own.now.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_peers_own_policy_is_kept_shown_and_a_throttled_peer_gets_at_most_its_rate() {
    let rx = Receiver::start().await;
    let a = Instance::start("conduct-rate").await;
    let hook = format!("{}/hooks/default/kite", rx.url);
    // Refused, naming the member, before anything is made.
    for (field, value, says) in [
        (
            "delivery",
            json!({"max_attempts": 0}),
            "delivery.max_attempts",
        ),
        ("delivery", json!({"rate": 3}), "delivery.rate is not"),
        (
            "delivery",
            json!({"timeout_ms": 1.5}),
            "delivery.timeout_ms",
        ),
        (
            "delivery",
            json!({"retry_base_ms": 500, "retry_max_delay_ms": 100}),
            "delivery.retry_max_delay_ms",
        ),
        ("ordering_key", json!("Subject"), "ordering_key must"),
        ("content_mode", json!("xml"), "content_mode must"),
        ("on_dead", json!("retry"), "on_dead must"),
        (
            "on_dead",
            json!("block"),
            "on_dead says what an ordered key does",
        ),
        ("delivery", json!({"rate_burst": 5}), "delivery.rate_burst"),
    ] {
        let mut body = json!({"name": "slow", "peer_hook_url": hook, "outbound_token": "t"});
        body[field] = value;
        let (s, v) = a.post("/api/federation/peers", body).await;
        assert_eq!(
            (s, &v["error"]["code"], &v["error"]["field"]),
            (400, &json!("validation_error"), &json!(field)),
            "{v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(says), "{msg}");
    }

    let policy = json!({"rate_per_sec": 10.0, "max_in_flight": 2, "timeout_ms": 2000,
                        "retry_base_ms": 50, "max_attempts": 4});
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "slow", "peer_hook_url": hook, "outbound_token": "t",
                   "delivery": policy}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["delivery"], policy, "{v}");
    assert_eq!(
        (&v["content_mode"], &v["on_dead"]),
        (&json!("structured"), &json!("skip"))
    );
    // Shown where operators look: `kite peer show` and `kite admin peers show`.
    let shown = peer_cmd(&a, &["show", "slow"]).await.ok().out;
    for line in [
        "delivery.rate_per_sec: 10.0",
        "delivery.max_in_flight: 2",
        "delivery.timeout_ms: 2000",
        "content_mode: structured",
    ] {
        assert!(
            shown.lines().any(|l| squeeze(l) == line),
            "{line:?} in {shown}"
        );
    }
    let shown = admin(&a, &["peers", "show", "slow", "--output", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["delivery"], policy, "{shown}");

    let n = 30;
    let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
    for id in &ids {
        post_ce(
            &a.http,
            &a.url,
            &json!({"specversion": "1.0", "id": id, "source": "/acme", "type": "com.acme.x",
                    "data": {}}),
        )
        .await;
    }
    eventually("every throttled event at the receiver", WAIT, || async {
        (rx.ids().len() == n).then_some(())
    })
    .await;
    let took = rx.all();
    assert_eq!(took.len(), n, "each once, none retried");
    let first = took[0].at;
    let times: Vec<f64> = took
        .iter()
        .map(|t| t.at.duration_since(first).as_secs_f64())
        .collect();
    let span = times[n - 1];
    let rate = (n - 1) as f64 / span;
    assert!(rate <= 10.5, "{rate:.2} events a second over {span:.2} s");
    // A token bucket of burst 1: no second holds more than 10 and the one it starts with,
    // give or take two a request late on the way (times are taken where they arrive, on a
    // machine the suite keeps busy); unthrottled, all of them would arrive within one.
    for (i, t) in times.iter().enumerate() {
        let within = times[i..].iter().take_while(|u| **u < t + 1.0).count();
        assert!(within <= 13, "{within} within a second of {t:.2} s");
    }
    // Waiting for the rate is no failure: nothing was retried or counted against the peer.
    let (_, rows) = a.get("/api/federation/outbox?limit=100").await;
    let rows = rows["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), n);
    for r in &rows {
        assert_eq!(
            (&r["status"], &r["failures"]),
            (&json!("delivered"), &json!(0)),
            "{r}"
        );
    }

    // Back to the instance's policy: the receiver takes them as fast as they come.
    let out = admin(
        &a,
        &[
            "peers",
            "update",
            "slow",
            "--delivery",
            "{}",
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(out["delivery"], json!({}), "{out}");
}

#[tokio::test]
async fn ordered_delivery_keeps_each_keys_order_across_a_sigkill_with_two_delivery_processes() {
    let rx = Receiver::start().await;
    let env = [
        ("KITE_ROLES", "ingress,router"),
        ("KITE_SWEEP_INTERVAL_MS", "300"),
        ("KITE_SWEEP_GRACE_MS", "2000"),
        ("KITE_PEER_PROBE_INTERVAL_MS", "500"),
        ("KITE_DB_POOL_SIZE", "8"),
    ];
    let a = Instance::process_with("ordered-a", &env).await;
    let mut d1 = Proc::start(&a, "delivery").await;
    let _d2 = Proc::start(&a, "delivery").await;
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "ordered", "peer_hook_url": format!("{}/hooks/default/kite", rx.url),
                   "outbound_token": "t", "ordering_key": "subject",
                   "delivery": {"retry_base_ms": 100, "retry_max_delay_ms": 300,
                                "max_attempts": 100, "timeout_ms": 1000}}),
        )
        .await;
    assert_eq!((s, &v["ordering_key"]), (201, &json!("subject")), "{v}");

    // 1,000 events over 10 keys; the 21st of key k3 fails until the receiver recovers.
    let stuck = "o203".to_string();
    rx.failing.lock().expect("lock").insert(stuck.clone());
    let key = |i: usize| format!("k{}", i % 10);
    let mut seq_of: HashMap<String, i64> = HashMap::new();
    let mut sending = futures::stream::FuturesUnordered::new();
    for i in 0..1000 {
        let (http, url) = (a.http.clone(), a.url.clone());
        let ce = json!({"specversion": "1.0", "id": format!("o{i}"), "source": "/acme",
                        "type": "com.acme.order", "subject": key(i), "data": {"i": i}});
        sending.push(async move { (format!("o{i}"), post_ce(&http, &url, &ce).await) });
        if sending.len() >= 8 {
            use futures::StreamExt;
            if let Some((id, seq)) = sending.next().await {
                seq_of.insert(id, seq);
            }
        }
        if i == 400 {
            // The first delivery process dies mid-run; it comes back.
            eventually("deliveries under way", WAIT, || async {
                (rx.ids().len() >= 100).then_some(())
            })
            .await;
            d1.kill().await;
            d1.spawn().await;
        }
    }
    {
        use futures::StreamExt;
        while let Some((id, seq)) = sending.next().await {
            seq_of.insert(id, seq);
        }
    }
    // Every key but k3 completes; k3 stops at its failing event.
    let k3_after: Vec<String> = (0..1000)
        .filter(|i| i % 10 == 3 && *i > 203)
        .map(|i| format!("o{i}"))
        .collect();
    let others: Vec<String> = (0..1000)
        .filter(|i| i % 10 != 3 || *i < 203)
        .map(|i| format!("o{i}"))
        .collect();
    eventually(
        "the nine other keys complete",
        Duration::from_secs(90),
        || async {
            let got = rx.ids();
            others.iter().all(|id| got.contains(id)).then_some(())
        },
    )
    .await;
    let got = rx.ids();
    assert!(
        k3_after.iter().all(|id| !got.contains(id)),
        "nothing of k3 after its failing event went out"
    );
    // The receiver recovers: k3 resumes, in order.
    rx.failing.lock().expect("lock").clear();
    eventually("every event delivered", Duration::from_secs(90), || async {
        (rx.ids().len() == 1000).then_some(())
    })
    .await;

    // At the receiver, each key's events first arrived in the order they were accepted.
    let mut first_arrival: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for t in rx.all() {
        if seen.insert(t.id.clone()) {
            first_arrival.push(t.id);
        }
    }
    for k in 0..10 {
        let arrived: Vec<&String> = first_arrival
            .iter()
            .filter(|id| id[1..].parse::<usize>().is_ok_and(|i| i % 10 == k))
            .collect();
        let mut accepted = arrived.clone();
        accepted.sort_by_key(|id| seq_of[id.as_str()]);
        assert_eq!(arrived, accepted, "key k{k} out of order");
    }
}

#[tokio::test]
async fn binary_mode_gives_an_ordinary_endpoint_the_providers_bytes_signed() {
    let rx = Receiver::start().await;
    let a = Instance::start("conduct-binary").await;
    let secret = "whsec_BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".to_string();
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "plain", "peer_hook_url": format!("{}/webhooks", rx.url),
                   "outbound_token": secret, "content_mode": "binary"}),
        )
        .await;
    assert_eq!((s, &v["content_mode"]), (201, &json!("binary")), "{v}");

    // A provider's body with its own spacing and numbers, as it came.
    let body = "{\"id\": \"evt_bin_1\",  \"object\": \"event\",\n \"type\": \"charge.succeeded\", \
                \"data\": {\"object\": {\"amount\": 1.50, \"big\": 12345678901234567890}}}";
    let r = a
        .http
        .post(format!("{}/hooks/default/stripe", a.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    eventually("the event at the endpoint", WAIT, || async {
        (!rx.all().is_empty()).then_some(())
    })
    .await;
    let got = rx.all().remove(0);
    assert_eq!(got.body, body.as_bytes(), "the provider's bytes, exactly");
    let header = |name: &str| {
        got.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("content-type"), "application/json");
    assert!(header("authorization").is_empty(), "no secret travels");
    let ev = common::tools::cloudevents_binary(&secret, &got.headers, &got.body)
        .unwrap_or_else(|e| panic!("the official libraries refused it: {e}"));
    let attrs = &ev["attributes"];
    assert_eq!(attrs["id"], "evt_bin_1", "{ev}");
    assert_eq!(attrs["type"], "com.stripe.charge.succeeded", "{ev}");
    assert_eq!(attrs["source"], "/hooks/default/stripe", "{ev}");
    assert_eq!(attrs["specversion"], "1.0", "{ev}");
    assert_eq!(ev["data"]["data"]["object"]["amount"], 1.5, "{ev}");
    // Signed with the endpoint's secret only.
    let wrong = "whsec_CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=".to_string();
    assert!(common::tools::cloudevents_binary(&wrong, &got.headers, &got.body).is_err());
}

#[tokio::test]
async fn a_dead_event_moves_its_key_on_or_blocks_it_as_the_peer_says() {
    let (skip_rx, block_rx) = (Receiver::start().await, Receiver::start().await);
    let a = Instance::start("conduct-dead").await;
    for (name, rx, on_dead) in [
        ("skipper", &skip_rx, "skip"),
        ("blocker", &block_rx, "block"),
    ] {
        rx.failing.lock().expect("lock").insert("d1".into());
        let (s, v) = a
            .post(
                "/api/federation/peers",
                json!({"name": name, "peer_hook_url": format!("{}/hooks/default/kite", rx.url),
                       "outbound_token": "t", "ordering_key": "tenant", "on_dead": on_dead,
                       "delivery": {"retry_base_ms": 50, "retry_max_delay_ms": 100,
                                    "max_attempts": 2}}),
            )
            .await;
        assert_eq!((s, &v["on_dead"]), (201, &json!(on_dead)), "{v}");
    }
    // The key is an extension; d1 fails for good at both peers, d2 follows it in its key,
    // d3 is another key's.
    for (id, tenant) in [("d1", "acme"), ("d2", "acme"), ("d3", "other")] {
        post_ce(
            &a.http,
            &a.url,
            &json!({"specversion": "1.0", "id": id, "source": "/acme", "type": "com.acme.x",
                    "tenant": tenant, "data": {}}),
        )
        .await;
    }
    let ok = |rx: &Receiver| {
        let mut v: Vec<String> = rx
            .all()
            .into_iter()
            .filter(|t| t.ok)
            .map(|t| t.id)
            .collect();
        v.sort();
        v
    };
    eventually(
        "skip: the key moves on past its dead event",
        WAIT,
        || async { (ok(&skip_rx) == ["d2", "d3"]).then_some(()) },
    )
    .await;
    eventually("block: the other key goes, d1 is dead", WAIT, || async {
        let (_, rows) = a.get("/api/federation/outbox?peer=blocker").await;
        let dead = rows["items"].as_array().is_some_and(|r| {
            r.iter()
                .any(|r| r["event_id"] == "d1" && r["status"] == "dead")
        });
        (dead && ok(&block_rx) == ["d3"]).then_some(())
    })
    .await;
    // Still blocked a while later: d2 waits behind its dead key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ok(&block_rx), ["d3"], "d2 waits behind the dead d1");

    // The receiver recovers and the operator resends d1: the key resumes, d1 then d2.
    block_rx.failing.lock().expect("lock").clear();
    let (_, rows) = a.get("/api/federation/outbox?peer=blocker").await;
    let d1 = rows["items"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["event_id"] == "d1"))
        .cloned()
        .unwrap_or_else(|| panic!("{rows}"));
    let (s, v) = a
        .post(
            &format!("/api/federation/outbox/{}/resend", d1["id"]),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    eventually("the blocked key resumes", WAIT, || async {
        (ok(&block_rx) == ["d1", "d2", "d3"]).then_some(())
    })
    .await;
    let order: Vec<String> = block_rx
        .all()
        .into_iter()
        .filter(|t| t.ok && t.id != "d3")
        .map(|t| t.id)
        .collect();
    assert_eq!(order, ["d1", "d2"], "d1 delivered before d2");
}
