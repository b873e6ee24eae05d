//! Peer filters in the CloudEvents Subscriptions API's dialects: routing forwards an event
//! only to the peers whose scopes and every filter match it, the story names the filter that
//! kept it from a peer, bad filters are refused naming their place, and the CLI sets them.

use crate::common;

use common::cli::admin;
use common::hostile::{Sink, WAIT};
use common::*;
use serde_json::{json, Value};

/// Posts a structured CloudEvent to `/hooks/default/acme`.
async fn post_ce(a: &Instance, ce: Value) -> u16 {
    let r = a
        .http
        .post(format!("{}/hooks/default/acme", a.url))
        .header("content-type", "application/cloudevents+json")
        .body(ce.to_string())
        .send()
        .await
        .expect("post");
    r.status().as_u16()
}

/// A structured CloudEvent with an extension `tenant`.
fn ce(id: &str, ty: &str, tenant: &str, subject: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/acme", "type": ty,
           "subject": subject, "tenant": tenant, "data": {"n": 1}})
}

/// The ids a sink took.
fn took(sink: &Sink) -> Vec<String> {
    let mut v = sink.seen.lock().expect("lock").accepted.clone();
    v.sort();
    v
}

#[tokio::test]
async fn each_dialect_routes_an_event_only_where_every_filter_matches() {
    let vip = Sink::start(|_| 200).await;
    let orders = Sink::start(|_| 200).await;
    let a = Instance::start("filters-a").await;
    let peer = |name: &str, sink: &Sink, filters: Value| {
        json!({"name": name, "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
               "outbound_token": "t", "filters": filters})
    };
    let (s, v) = a
        .post(
            "/api/federation/peers",
            peer(
                "vip",
                &vip,
                json!([{"exact": {"tenant": "acme"}}, {"not": {"suffix": {"type": ".test"}}}]),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["filters"][0], json!({"exact": {"tenant": "acme"}}), "{v}");
    let vip_id = v["id"].as_str().expect("id").to_owned();
    let (s, v) = a
        .post(
            "/api/federation/peers",
            peer(
                "orders",
                &orders,
                json!([{"any": [{"prefix": {"type": "com.acme.order."}},
                                {"all": [{"exact": {"subject": "x"}}]}]}]),
            ),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    for (id, ty, tenant, subject) in [
        ("f1", "com.acme.order.created", "acme", "s"),
        ("f2", "com.acme.order.created", "other", "s"),
        ("f3", "com.acme.order.test", "acme", "s"),
        ("f4", "com.acme.user.created", "acme", "x"),
        ("f5", "com.acme.user.created", "acme", "y"),
    ] {
        assert_eq!(post_ce(&a, ce(id, ty, tenant, subject)).await, 202);
    }
    eventually("the routed events delivered", WAIT, || async {
        (took(&vip).len() == 3 && took(&orders).len() == 4).then_some(())
    })
    .await;
    assert_eq!(
        took(&vip),
        ["f1", "f4", "f5"],
        "exact tenant, not suffix .test"
    );
    // A prefix of the type, or (f4) all of one exact on the subject.
    assert_eq!(took(&orders), ["f1", "f2", "f3", "f4"]);

    // The story says which filter kept an event from a peer.
    let (_, st) = a.get("/api/events/f2").await;
    let d = st["deliveries"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["peer"] == "vip"))
        .cloned()
        .unwrap_or_else(|| panic!("{st}"));
    assert_eq!(
        (&d["outcome"], &d["reason"], &d["filter"]),
        (
            &json!("no_match"),
            &json!("filters"),
            &json!({"exact": {"tenant": "acme"}})
        ),
        "{d}"
    );

    // Filters removed, the peer takes what its scopes do.
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{vip_id}"),
            json!({"filters": []}),
        )
        .await;
    assert_eq!((s, &v["filters"]), (200, &json!([])), "{v}");
    assert_eq!(
        post_ce(&a, ce("f6", "com.acme.order.test", "other", "s")).await,
        202
    );
    eventually("f6 at vip", WAIT, || async {
        took(&vip).contains(&"f6".to_string()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn bad_filters_are_refused_naming_their_place_and_the_cli_sets_good_ones() {
    let a = Instance::start("filters-bad").await;
    let base = json!({"name": "p", "peer_hook_url": "http://127.0.0.1:9/hooks/default/kite",
                      "outbound_token": "t"});
    for (filters, place) in [
        (json!({"exact": {"type": "a"}}), "filters must be an array"),
        (
            json!([{"exact": {"type": "a", "id": "b"}}]),
            "filters[0].exact",
        ),
        (
            json!([{"exact": {"type": "a"}}, {"like": {"type": "a"}}]),
            "filters[1]",
        ),
        (
            json!([{"any": [{"prefix": {"Type": "a"}}]}]),
            "filters[0].any[0].prefix",
        ),
        (json!([{"suffix": {"type": ""}}]), "filters[0].suffix.type"),
    ] {
        let mut body = base.clone();
        body["filters"] = filters.clone();
        let (s, v) = a.post("/api/federation/peers", body).await;
        assert_eq!(
            (s, &v["error"]["code"], &v["error"]["field"]),
            (400, &json!("validation_error"), &json!("filters")),
            "{filters}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(place), "{filters}: {msg}");
    }
    let (_, list) = a.get("/api/federation/peers").await;
    assert_eq!(list["items"], json!([]), "nothing was made");

    // The CLI: --filter takes JSON, checked before the request.
    let out = admin(
        &a,
        &[
            "peers",
            "create",
            "--name",
            "cli",
            "--url",
            "http://127.0.0.1:9/hooks/default/kite",
            "--token",
            "t",
            "--filter",
            r#"{"prefix":{"subject":"cus_"}}"#,
            "--filter",
            r#"{"not":{"exact":{"tenant":"test"}}}"#,
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        out["filters"],
        json!([{"prefix": {"subject": "cus_"}}, {"not": {"exact": {"tenant": "test"}}}]),
        "{out}"
    );
    let bad = admin(
        &a,
        &["peers", "update", "cli", "--filter", r#"{"exact":{}}"#],
    )
    .await;
    assert!(
        bad.code == Some(2) && bad.err.contains("filter[0].exact"),
        "{bad:?}"
    );
    let cleared = admin(
        &a,
        &["peers", "update", "cli", "--no-filters", "--output", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(cleared["filters"], json!([]), "{cleared}");
}

#[tokio::test]
async fn kite_listen_shows_only_what_its_filters_match() {
    let a = Instance::start("filters-listen").await;
    let mut l = common::listen::Listen::start(
        &a,
        &[
            "--json",
            "--filter",
            r#"{"exact":{"tenant":"acme"}}"#,
            "--filter",
            r#"{"prefix":{"type":"com.acme."}}"#,
        ],
    )
    .await;
    for (id, ty, tenant) in [
        ("l1", "com.acme.order.created", "other"),
        ("l2", "org.other.thing", "acme"),
        ("l3", "com.acme.order.created", "acme"),
    ] {
        assert_eq!(post_ce(&a, ce(id, ty, tenant, "s")).await, 202);
    }
    // The stream is in order: the first line shown is the first event both filters match.
    let first = l.json().await;
    assert_eq!(first["id"], "l3", "{first}");
    assert_eq!(first["tenant"], "acme");
}

#[tokio::test]
async fn an_invitation_and_an_accept_carry_filters_and_order_to_the_peers_they_make() {
    let a = Instance::start("filt-inv-a").await;
    let b = Instance::start("filt-inv-b").await;
    // A sends B only events about customer cus_1; B sends A only what is not a test.
    let (s, inv) = a
        .post(
            "/api/federation/invitations",
            json!({"scopes": ["*"], "filters": [{"exact": {"subject": "cus_1"}}],
                   "ordering_key": "subject", "delivery": {"max_attempts": 7}}),
        )
        .await;
    assert_eq!(s, 201, "{inv}");
    assert_eq!(
        inv["filters"],
        json!([{"exact": {"subject": "cus_1"}}]),
        "{inv}"
    );
    let out = common::cli::kite(&[
        "peer",
        "--instance",
        &b.url,
        "--api-key",
        &b.key,
        "--output",
        "json",
        "accept",
        inv["invitation"].as_str().expect("invitation"),
        "--scopes",
        "*",
        "--filter",
        r#"{"not":{"suffix":{"type":".test"}}}"#,
        "--ordering-key",
        "tenant",
        "--on-dead",
        "block",
        "--delivery",
        r#"{"timeout_ms":5000}"#,
    ])
    .await
    .ok()
    .json();
    assert_eq!(
        out["filters"],
        json!([{"not": {"suffix": {"type": ".test"}}}]),
        "B's peer for A: {out}"
    );
    assert_eq!(
        (&out["ordering_key"], &out["on_dead"], &out["delivery"]),
        (
            &json!("tenant"),
            &json!("block"),
            &json!({"timeout_ms": 5000})
        ),
        "B's peer for A: {out}"
    );
    let (_, pa) = a.get("/api/federation/peers").await;
    assert_eq!(
        pa["items"][0]["filters"],
        json!([{"exact": {"subject": "cus_1"}}]),
        "A's peer for B: {pa}"
    );
    assert_eq!(
        (&pa["items"][0]["ordering_key"], &pa["items"][0]["delivery"]),
        (&json!("subject"), &json!({"max_attempts": 7})),
        "A's peer for B, from the invitation: {pa}"
    );

    // What the filters let through crosses; the rest stays.
    for (id, subject) in [("i1", "cus_2"), ("i2", "cus_1")] {
        assert_eq!(
            post_ce(&a, ce(id, "com.acme.order.created", "acme", subject)).await,
            202
        );
    }
    eventually("i2 at B", WAIT, || async {
        b.event("i2").await.map(|_| ())
    })
    .await;
    assert!(b.event("i1").await.is_none(), "i1 matched no filter of A's");
    for id in ["j1", "j2"] {
        let ty = if id == "j1" {
            "com.acme.x.test"
        } else {
            "com.acme.x.live"
        };
        assert_eq!(post_ce(&b, ce(id, ty, "acme", "s")).await, 202);
    }
    eventually("j2 at A", WAIT, || async {
        a.event("j2").await.map(|_| ())
    })
    .await;
    assert!(a.event("j1").await.is_none(), "j1 is a test: B keeps it");
}

#[tokio::test]
async fn cel_filters_read_the_data_and_the_story_says_why_one_did_not_match() {
    let big = Sink::start(|_| 200).await;
    let a = Instance::start("filters-cel").await;
    let expr = r#"data.object.amount > 1000 && data.object.currency == "usd""#;
    // Refused where it would not compile or would cost too much, naming the place.
    for (bad, why) in [
        ("data.object.amount >", "filters[0].cel: does not compile"),
        (
            "data.items.map(i, i.x).size() > 0",
            "filters[0].cel: map and filter",
        ),
    ] {
        let (s, v) = a
            .post(
                "/api/federation/peers",
                json!({"name": "big", "outbound_token": "t", "filters": [{"cel": bad}],
                       "peer_hook_url": format!("{}/hooks/default/kite", big.url)}),
            )
            .await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (400, &json!("validation_error")),
            "{v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with(why), "{msg}");
    }
    let out = admin(
        &a,
        &[
            "peers",
            "create",
            "--name",
            "big",
            "--url",
            &format!("{}/hooks/default/kite", big.url),
            "--token",
            "t",
            "--filter",
            &json!({"cel": expr}).to_string(),
            "--output",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(out["filters"], json!([{"cel": expr}]), "{out}");

    let charge = |id: &str, object: Value| {
        json!({"specversion": "1.0", "id": id, "source": "/acme",
               "type": "com.stripe.charge.succeeded", "data": {"object": object}})
    };
    for (id, object) in [
        ("c1", json!({"amount": 5000, "currency": "usd"})),
        ("c2", json!({"amount": 5000, "currency": "eur"})),
        ("c3", json!({"amount": 20, "currency": "usd"})),
        ("c4", json!({"currency": "usd"})),
        ("c5", json!({"amount": 1001.5, "currency": "usd"})),
    ] {
        assert_eq!(post_ce(&a, charge(id, object)).await, 202);
    }
    eventually("the large charges delivered", WAIT, || async {
        (took(&big).len() == 2).then_some(())
    })
    .await;
    assert_eq!(took(&big), ["c1", "c5"]);
    let story = |id: &'static str| {
        let a = &a;
        async move {
            let (_, st) = a.get(&format!("/api/events/{id}")).await;
            st["deliveries"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["peer"] == "big"))
                .cloned()
                .unwrap_or_else(|| panic!("{st}"))
        }
    };
    let d = story("c2").await;
    assert_eq!(
        (&d["outcome"], &d["reason"], &d["filter"]),
        (&json!("no_match"), &json!("filters"), &json!({"cel": expr})),
        "{d}"
    );
    assert!(d.get("filter_error").is_none(), "it answered false: {d}");
    // An expression that errors on an event does not match it, and the story says why.
    let d = story("c4").await;
    assert_eq!(
        (&d["outcome"], &d["reason"]),
        (&json!("no_match"), &json!("filters")),
        "{d}"
    );
    let err = d["filter_error"].as_str().unwrap_or_default();
    assert!(err.contains("amount"), "{d}");
    let shown = admin(&a, &["events", "show", "c4"]).await.ok();
    assert!(
        shown.out.contains("big: not matched by filter") && shown.out.contains(err),
        "{}",
        shown.out
    );
}
