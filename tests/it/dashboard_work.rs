//! The dashboard as a place to work, in a real headless Chromium over WebDriver: search and
//! page events and open their stories; resend, cancel and replay deliveries; a peer's charts
//! and its terms; sources, keys, invitations and peers made from forms (and none of it for a
//! read key); federated events in the live tail with their origin and chain. Each view is
//! saved as a screenshot under `target/screenshots/` for a person to look at.

use crate::common;
use crate::dashboard::{sign_in, wait_text, Driver};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::hostile::{Sink, WAIT};
use common::*;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};

/// How long the page may take to show something.
const PAGE: Duration = Duration::from_secs(30);

/// Whether the outbox-actions sink takes events (it refuses them, 400, until told).
static ACT_TAKES: AtomicBool = AtomicBool::new(false);

fn act_rule(_: &str) -> u16 {
    if ACT_TAKES.load(Ordering::SeqCst) {
        200
    } else {
        400
    }
}

fn takes_all(_: &str) -> u16 {
    200
}

/// Saves what the browser shows as `target/screenshots/{name}.png`.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write the screenshot");
}

/// Opens a view of the dashboard (a hash route of `/ui`).
async fn open(c: &Client, a: &Instance, route: &str) {
    c.goto(&format!("{}/ui{route}", a.url))
        .await
        .unwrap_or_else(|e| panic!("open {route}: {e}"));
}

/// Clicks what `css` finds once it is there and takes the click (a refresh may have just
/// redrawn it).
async fn click(c: &Client, css: &str) {
    eventually(&format!("a click on {css}"), PAGE, || async {
        c.find(Locator::Css(css)).await.ok()?.click().await.ok()
    })
    .await;
}

/// Types `text` into the field `css` finds, replacing what it held.
async fn fill(c: &Client, css: &str, text: &str) {
    let field = c
        .wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the field {css}: {e}"));
    field.clear().await.expect("clear the field");
    if !text.is_empty() {
        field.send_keys(text).await.expect("type into the field");
    }
}

/// Chooses the option of value `value` in the select `css` finds.
async fn choose(c: &Client, css: &str, value: &str) {
    c.wait()
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("the select {css}: {e}"))
        .select_by_value(value)
        .await
        .unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
}

/// How many elements `css` finds.
async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

/// Waits until `css` finds exactly `n` elements.
async fn wait_count(c: &Client, css: &str, n: usize) {
    eventually(&format!("{n} of {css}"), PAGE, || async {
        (count(c, css).await == n).then_some(())
    })
    .await;
}

/// The attribute `attr` of what `css` finds, once it is what is wanted.
async fn wait_attr(c: &Client, css: &str, attr: &str, want: impl Fn(&str) -> bool) -> String {
    eventually(
        &format!("{css}[{attr}] to be what is wanted"),
        PAGE,
        || async {
            let v = c
                .find(Locator::Css(css))
                .await
                .ok()?
                .attr(attr)
                .await
                .ok()??;
            want(&v).then_some(v)
        },
    )
    .await
}

/// Whether what `css` finds is shown (false when there is none).
async fn shown(c: &Client, css: &str) -> bool {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.is_displayed().await.unwrap_or(false),
        Err(_) => false,
    }
}

/// The outbox row of the event `ce_id` (on any peer), as the API lists it.
async fn row_of(a: &Instance, ce_id: &str) -> Option<Value> {
    a.outbox("type=*")
        .await
        .into_iter()
        .find(|r| r["event_id"] == ce_id)
}

/// Waits until the outbox row of `ce_id` is in `status`.
async fn row_becomes(a: &Instance, ce_id: &str, status: &str) -> Value {
    eventually(&format!("{ce_id}'s row to be {status}"), WAIT, || async {
        row_of(a, ce_id).await.filter(|r| r["status"] == status)
    })
    .await
}

/// Posts a Stripe-shaped event to the unsigned `stripe` source (its id is the body's).
async fn post(a: &Instance, id: &str, ty: &str) {
    let (s, v) = a.hook("stripe", &stripe_event(id, ty)).await;
    assert_eq!(s, 202, "{id}: {v}");
}

/// A status code a `fetch` from the page answers, with the page's signed-in key.
async fn page_fetch(c: &Client, method: &str, path: &str, body: Value) -> Value {
    c.execute(
        "return fetch(arguments[1], {method: arguments[0], headers: {Authorization: 'Bearer ' + \
         sessionStorage.getItem('kite.key'), 'Content-Type': 'application/json'}, \
         body: JSON.stringify(arguments[2])}).then(r => r.status)",
        vec![json!(method), json!(path), body],
    )
    .await
    .expect("a fetch from the page")
}

#[tokio::test]
async fn events_are_searched_by_type_paged_and_open_their_story() {
    let a = Instance::start_with("ui-events", &[]).await;
    post(&a, "evt_list_1", "charge.succeeded").await;
    post(&a, "evt_list_2", "charge.refunded").await;
    post(&a, "evt_list_3", "invoice.paid").await;
    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;

    // Every event, oldest first, each with its type and source; none came from a peer.
    open(&c, &a, "#/events").await;
    wait_count(&c, "#events-rows tr", 3).await;
    wait_text(&c, "#events-rows tr:nth-child(1) td:nth-child(2)", |t| {
        t == "evt_list_1"
    })
    .await;
    wait_text(&c, "#events-rows tr:nth-child(3) td:nth-child(3)", |t| {
        t == "com.stripe.invoice.paid"
    })
    .await;
    wait_text(&c, "#events-rows tr:nth-child(1) td:nth-child(4)", |t| {
        t == "stripe"
    })
    .await;
    wait_text(&c, "#events-rows tr:nth-child(1) td:nth-child(5)", |t| {
        t == "–"
    })
    .await;

    // A type glob: only the charges.
    fill(&c, "#e-type", "com.stripe.charge.*").await;
    click(&c, "#events-search").await;
    wait_text(&c, "#events-rows", |t| {
        t.contains("evt_list_1") && t.contains("evt_list_2") && !t.contains("evt_list_3")
    })
    .await;
    wait_count(&c, "#events-rows tr", 2).await;
    let hash: Value = c
        .execute("return location.hash", vec![])
        .await
        .expect("the hash");
    assert!(
        hash.as_str()
            .unwrap_or("")
            .contains("type=com.stripe.charge."),
        "the search is in the address: {hash}"
    );
    screenshot(&c, "events-search").await;

    // Pages of two: the first two, then the third alone and no further page.
    fill(&c, "#e-type", "").await;
    fill(&c, "#e-limit", "2").await;
    click(&c, "#events-search").await;
    wait_text(&c, "#events-rows", |t| {
        t.contains("evt_list_1") && t.contains("evt_list_2") && !t.contains("evt_list_3")
    })
    .await;
    wait_count(&c, "#events-rows tr", 2).await;
    assert!(shown(&c, "#events-more").await, "a next page is offered");
    click(&c, "#events-more").await;
    wait_text(&c, "#events-rows", |t| {
        t.contains("evt_list_3") && !t.contains("evt_list_1")
    })
    .await;
    wait_count(&c, "#events-rows tr", 1).await;
    assert!(
        !shown(&c, "#events-more").await,
        "the last page offers no next one"
    );
    assert!(
        shown(&c, "#events-first").await,
        "the first page can be had again"
    );

    // A row opens its event's story.
    click(&c, "#events-rows tr[data-event='evt_list_3']").await;
    wait_text(&c, "#story-title", |t| {
        t.contains("evt_list_3") && t.contains("com.stripe.invoice.paid")
    })
    .await;
    let hash: Value = c
        .execute("return location.hash", vec![])
        .await
        .expect("the hash");
    assert!(
        hash.as_str().unwrap_or("").starts_with("#/events?id="),
        "the story has an address of its own: {hash}"
    );
    wait_text(&c, "#story-meta dd[data-field='origin']", |t| {
        t == "entered here"
    })
    .await;
    screenshot(&c, "events-story").await;

    // An id (here a CloudEvent id) opens its story directly.
    click(&c, "#story-back").await;
    wait_text(&c, "#events-rows", |t| t.contains("evt_list_3")).await;
    fill(&c, "#event-id", "evt_list_2").await;
    click(&c, "#events-search").await;
    wait_text(&c, "#story-title", |t| t.contains("evt_list_2")).await;
    // An id that names nothing says so.
    fill(&c, "#event-id", "evt_none").await;
    click(&c, "#events-search").await;
    wait_text(&c, "#event-error", |t| t.contains("evt_none")).await;
    c.close().await.expect("close the browser");
}

#[tokio::test]
async fn a_dead_row_is_resent_a_pending_one_cancelled_and_dead_ones_replayed_by_filter() {
    let sink = Sink::start(act_rule).await;
    let a = Instance::start_with(
        "ui-act",
        &[
            ("KITE_RETRY_MAX_ATTEMPTS", "2"),
            ("KITE_PEER_FAILURE_THRESHOLD", "1000"),
        ],
    )
    .await;
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "act-sink", "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
                   "outbound_token": "t"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let peer_id = v["id"].as_str().expect("peer id").to_string();
    post(&a, "evt_act_1", "charge.succeeded").await;
    post(&a, "evt_act_2", "charge.refunded").await;
    row_becomes(&a, "evt_act_1", "dead").await;
    row_becomes(&a, "evt_act_2", "dead").await;

    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;

    // The dead letters, with a Resend on each row and Replay matching for the filter.
    open(&c, &a, "#/outbox?status=dead&peer=act-sink").await;
    wait_text(&c, "#outbox-title", |t| t == "Dead letters").await;
    let dead1 = "#outbox-rows tr[data-event='evt_act_1']";
    wait_text(&c, &format!("{dead1} td.state"), |t| t == "dead").await;
    wait_text(&c, &format!("{dead1} td:nth-child(2)"), |t| {
        t == "evt_act_1"
    })
    .await;
    assert!(
        shown(&c, "#replay-matching").await,
        "an admin may replay by filter"
    );
    assert_eq!(
        count(&c, "#outbox-rows button[data-action='cancel']").await,
        0,
        "a dead row cannot be cancelled"
    );
    screenshot(&c, "dead-letters").await;

    // The sink takes events now: resend one row from its row, and it is delivered.
    ACT_TAKES.store(true, Ordering::SeqCst);
    click(&c, &format!("{dead1} button[data-action='resend']")).await;
    wait_text(&c, "#outbox-note", |t| t.contains("Resent row")).await;
    row_becomes(&a, "evt_act_1", "delivered").await;
    sink.assert_once(&["evt_act_1".to_string()]).await;
    // Only that one: the other stays dead until replayed.
    assert_eq!(
        row_of(&a, "evt_act_2").await.expect("row")["status"],
        "dead"
    );

    // Its story lists the resend beside the attempts.
    open(&c, &a, "#/events?id=evt_act_1").await;
    let story = wait_text(&c, "#story-rows tr[data-peer='act-sink']", |t| {
        t.contains("delivered") && t.contains("resend by")
    })
    .await;
    assert!(
        story.contains("400"),
        "the refused attempts are there too: {story}"
    );
    screenshot(&c, "story-resend").await;

    // Replay what the filter shows: the dead charge.refunded row.
    open(
        &c,
        &a,
        "#/outbox?status=dead&peer=act-sink&type=com.stripe.charge.*",
    )
    .await;
    wait_text(
        &c,
        "#outbox-rows tr[data-event='evt_act_2'] td.state",
        |t| t == "dead",
    )
    .await;
    click(&c, "#replay-matching").await;
    wait_text(&c, "#outbox-note", |t| {
        t.contains("Replayed 1 dead delivery")
    })
    .await;
    row_becomes(&a, "evt_act_2", "delivered").await;
    sink.assert_once(&["evt_act_2".to_string()]).await;

    // A paused peer's row waits, pending; cancel it from its row.
    let (s, v) = a
        .patch(
            &format!("/api/federation/peers/{peer_id}"),
            json!({"status": "paused"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    post(&a, "evt_act_3", "charge.succeeded").await;
    row_becomes(&a, "evt_act_3", "pending").await;
    open(&c, &a, "#/outbox?peer=act-sink").await;
    let row3 = "#outbox-rows tr[data-event='evt_act_3']";
    wait_text(&c, &format!("{row3} td.state"), |t| t == "pending").await;
    click(&c, &format!("{row3} button[data-action='cancel']")).await;
    wait_text(&c, &format!("{row3} td.state"), |t| t == "cancelled").await;
    wait_text(&c, "#outbox-note", |t| t.contains("Cancelled row")).await;
    row_becomes(&a, "evt_act_3", "cancelled").await;
    assert_eq!(
        count(&c, &format!("{row3} button[data-action='cancel']")).await,
        0,
        "a cancelled row offers no cancel"
    );
    screenshot(&c, "outbox-cancelled").await;

    // A row opens its story (anywhere but its buttons); the story lists the cancel.
    click(&c, &format!("{row3} td:nth-child(3)")).await;
    wait_text(&c, "#story-title", |t| t.contains("evt_act_3")).await;
    wait_text(&c, "#story-rows tr[data-peer='act-sink']", |t| {
        t.contains("cancelled") && t.contains("cancel by")
    })
    .await;
    c.close().await.expect("close the browser");
}

#[tokio::test]
async fn a_peer_shows_its_charts_and_its_terms_change_from_the_page() {
    let sink = Sink::start(takes_all).await;
    let a = Instance::start_with("ui-chart", &[]).await;
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "chart-sink", "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
                   "outbound_token": "t", "filters": [{"prefix": {"type": "com.stripe."}}]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let peer_id = v["id"].as_str().expect("peer id").to_string();
    post(&a, "evt_chart_1", "charge.succeeded").await;
    post(&a, "evt_chart_2", "charge.succeeded").await;
    row_becomes(&a, "evt_chart_1", "delivered").await;
    row_becomes(&a, "evt_chart_2", "delivered").await;

    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;

    // The peer's name in the peers table opens its view.
    let row = "tr[data-peer='chart-sink']";
    wait_text(&c, &format!("{row} td:nth-child(1)"), |t| t == "chart-sink").await;
    click(&c, &format!("{row} td:nth-child(1) a")).await;
    wait_text(&c, "#peer-title", |t| t == "chart-sink").await;
    wait_text(&c, "#peer-fields dd[data-field='scopes']", |t| t == "*").await;
    wait_text(&c, "#peer-fields dd[data-field='filters']", |t| {
        t == r#"{"prefix":{"type":"com.stripe."}}"#
    })
    .await;
    wait_text(&c, "#peer-fields dd[data-field='status']", |t| {
        t == "active"
    })
    .await;

    // The last hour: what was delivered, as bars.
    let delivered = wait_attr(&c, "#peer-chart", "data-delivered", |v| {
        v.parse::<i64>().is_ok_and(|n| n >= 2)
    })
    .await;
    assert_eq!(
        wait_attr(&c, "#peer-chart", "data-window", |v| !v.is_empty()).await,
        "hour"
    );
    assert_eq!(
        wait_attr(&c, "#peer-chart", "data-failed", |v| !v.is_empty()).await,
        "0"
    );
    assert_eq!(
        wait_attr(&c, "#peer-chart", "data-buckets", |v| !v.is_empty()).await,
        "12"
    );
    assert!(
        count(&c, "#peer-chart rect.bar-delivered").await >= 1,
        "a green bar for {delivered} delivered"
    );
    assert!(
        count(&c, "#peer-chart path.line-p50").await >= 1,
        "a latency line"
    );
    screenshot(&c, "peer-hour").await;

    // The last day.
    click(&c, "#window-day").await;
    wait_attr(&c, "#peer-chart", "data-window", |v| v == "day").await;
    wait_attr(&c, "#peer-chart", "data-delivered", |v| {
        v.parse::<i64>().is_ok_and(|n| n >= 2)
    })
    .await;
    assert_eq!(
        wait_attr(&c, "#peer-chart", "data-buckets", |v| !v.is_empty()).await,
        "24"
    );
    screenshot(&c, "peer-day").await;

    // Its scopes change from the form; only what changed is sent.
    fill(
        &c,
        "#peer-edit-form input[name='scopes']",
        "com.stripe.*, com.github.*",
    )
    .await;
    click(&c, "#peer-edit-form button[type='submit']").await;
    wait_text(&c, "#peer-note", |t| t.contains("Saved scopes")).await;
    wait_text(&c, "#peer-fields dd[data-field='scopes']", |t| {
        t == "com.stripe.*, com.github.*"
    })
    .await;
    let (s, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["scopes"], json!(["com.stripe.*", "com.github.*"]), "{p}");
    // Its filters change from the form too, and a bad one is refused naming its place.
    fill(
        &c,
        "#peer-edit-form textarea[name='filters']",
        r#"[{"exact": {"type": "com.stripe.charge.succeeded"}}]"#,
    )
    .await;
    click(&c, "#peer-edit-form button[type='submit']").await;
    wait_text(&c, "#peer-note", |t| t.contains("Saved filters")).await;
    wait_text(&c, "#peer-fields dd[data-field='filters']", |t| {
        t == r#"{"exact":{"type":"com.stripe.charge.succeeded"}}"#
    })
    .await;
    let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(
        p["filters"],
        json!([{"exact": {"type": "com.stripe.charge.succeeded"}}]),
        "{p}"
    );
    fill(
        &c,
        "#peer-edit-form textarea[name='filters']",
        r#"[{"like": {"type": "x"}}]"#,
    )
    .await;
    click(&c, "#peer-edit-form button[type='submit']").await;
    wait_text(&c, "#peer-note", |t| t.contains("filters[0]")).await;
    fill(
        &c,
        "#peer-edit-form textarea[name='filters']",
        r#"[{"exact": {"type": "com.stripe.charge.succeeded"}}]"#,
    )
    .await;
    // Its order and its own delivery policy, from the same form, shown on the page.
    fill(&c, "#peer-edit-form input[name='ordering_key']", "subject").await;
    fill(
        &c,
        "#peer-edit-form textarea[name='delivery']",
        r#"{"rate_per_sec": 5, "max_attempts": 4}"#,
    )
    .await;
    click(&c, "#peer-edit-form button[type='submit']").await;
    wait_text(&c, "#peer-note", |t| {
        t.contains("ordering_key, delivery of")
    })
    .await;
    wait_text(&c, "#peer-fields dd[data-field='delivery-policy']", |t| {
        t.contains("rate_per_sec 5") && t.contains("max_attempts 4")
    })
    .await;
    wait_text(&c, "#peer-fields dd[data-field='order']", |t| {
        t == "by subject, dead events skip"
    })
    .await;
    let (_, p) = a.get(&format!("/api/federation/peers/{peer_id}")).await;
    assert_eq!(
        (&p["ordering_key"], &p["delivery"]["max_attempts"]),
        (&json!("subject"), &json!(4)),
        "{p}"
    );
    // A refused change says why.
    fill(
        &c,
        "#peer-edit-form textarea[name='filters']",
        r#"[{"exact": {"type": "com.stripe.charge.succeeded"}}]"#,
    )
    .await;
    fill(&c, "#peer-edit-form input[name='max_hops']", "99").await;
    c.execute(
        "document.querySelector('#peer-edit-form input[name=max_hops]').removeAttribute('max')",
        vec![],
    )
    .await
    .expect("let the browser send it");
    click(&c, "#peer-edit-form button[type='submit']").await;
    wait_text(&c, "#peer-note", |t| t.contains("max_hops")).await;
    c.close().await.expect("close the browser");
}

#[tokio::test]
async fn an_admin_makes_sources_keys_invitations_and_peers_from_forms_and_a_read_key_sees_none() {
    let a = Instance::start_with("ui-forms", &[]).await;
    // An unsigned source: anyone's posts are taken there.
    let (s, v) = a
        .hook("orders", &json!({"type": "order.paid", "id": "o1"}))
        .await;
    assert_eq!(s, 202, "{v}");
    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;

    // Sources: the unsigned one is marked; a signed one is made with a secret kite makes,
    // shown once.
    open(&c, &a, "#/sources").await;
    wait_text(
        &c,
        "#sources-rows tr[data-source='orders'] .unsigned",
        |t| t.contains("unsigned: accepts anyone's posts"),
    )
    .await;
    fill(&c, "#source-create-form input[name='name']", "billing").await;
    choose(&c, "#source-create-form select[name='scheme']", "github").await;
    click(&c, "#source-create-form button[type='submit']").await;
    let secret = wait_text(&c, "#secret-once-value", |t| t.starts_with("whsec_")).await;
    wait_text(&c, "#secret-once", |t| {
        t.contains("will not be shown again")
    })
    .await;
    wait_text(
        &c,
        "#sources-rows tr[data-source='billing'] td:nth-child(2)",
        |t| t == "github",
    )
    .await;
    let (s, v) = a.get("/api/sources").await;
    assert_eq!(s, 200, "{v}");
    let billing = v["items"]
        .as_array()
        .and_then(|i| i.iter().find(|s| s["name"] == "billing").cloned())
        .unwrap_or_else(|| panic!("billing is listed: {v}"));
    assert_eq!(billing["scheme"], "github", "{billing}");
    assert!(!v.to_string().contains(&secret), "the API never shows it");
    screenshot(&c, "sources").await;

    // Keys: the secret shown before is gone once the view changes; a new read key is shown
    // once, and it works.
    open(&c, &a, "#/keys").await;
    wait_text(&c, "#keys-rows", |t| t.contains("bootstrap")).await;
    assert!(
        !shown(&c, "#secret-once").await,
        "a secret is shown once only"
    );
    fill(&c, "#key-create-form input[name='label']", "viewer-ui").await;
    choose(&c, "#key-create-form select[name='permission']", "read").await;
    click(&c, "#key-create-form button[type='submit']").await;
    let read_key = wait_text(&c, "#secret-once-value", |t| t.starts_with("kite_")).await;
    let (s, v) = a.get("/api/keys").await;
    assert_eq!(s, 200, "{v}");
    let listed = v["items"]
        .as_array()
        .and_then(|i| i.iter().find(|k| k["label"] == "viewer-ui").cloned())
        .unwrap_or_else(|| panic!("the key is listed: {v}"));
    assert_eq!(listed["permission"], "read", "{listed}");
    let prefix = listed["prefix"].as_str().expect("prefix").to_string();
    assert!(read_key.starts_with(&prefix), "{read_key} is {prefix}");
    let session = kite_kit::client::ApiClient::with_http(a.http.clone(), &a.url, &read_key)
        .call(reqwest::Method::GET, "/api/session", None)
        .await
        .expect("a session call");
    assert_eq!(
        (session.status, session.body["permission"].clone()),
        (200, json!("read")),
        "{}",
        session.body
    );
    wait_text(&c, &format!("#keys-rows tr[data-prefix='{prefix}']"), |t| {
        t.contains("viewer-ui")
    })
    .await;
    screenshot(&c, "keys").await;

    // Revoking takes two clicks.
    let (s, v) = a
        .post("/api/keys", json!({"permission": "admin", "label": "old"}))
        .await;
    assert_eq!(s, 201, "{v}");
    let old = v["prefix"].as_str().expect("prefix").to_string();
    let revoke = format!("#keys-rows tr[data-prefix='{old}'] button[data-action='revoke-key']");
    click(&c, &revoke).await;
    wait_text(&c, &revoke, |t| t.contains("again")).await;
    click(&c, &revoke).await;
    wait_text(&c, "#keys-note", |t| {
        t.contains(&format!("Revoked key {old}"))
    })
    .await;
    let (_, v) = a.get("/api/keys").await;
    let gone = v["items"]
        .as_array()
        .and_then(|i| i.iter().find(|k| k["prefix"] == old.as_str()).cloned())
        .expect("the revoked key is listed");
    assert!(!gone["revoked_at"].is_null(), "{gone}");

    // Invitations: the string is shown once, with a copy button.
    open(&c, &a, "#/invitations").await;
    fill(
        &c,
        "#invite-create-form input[name='scopes']",
        "com.stripe.*",
    )
    .await;
    choose(&c, "#invite-create-form select[name='ttl']", "86400").await;
    click(&c, "#invite-create-form button[type='submit']").await;
    wait_text(&c, "#secret-once-value", |t| t.starts_with("kiteinv_")).await;
    assert!(shown(&c, "#secret-copy").await, "a copy button");
    wait_text(&c, "#invitations-rows", |t| t.contains("com.stripe.*")).await;
    let (s, v) = a.get("/api/federation/invitations").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["items"][0]["scopes"], json!(["com.stripe.*"]), "{v}");
    screenshot(&c, "invitations").await;

    // Peers: a token peer from the form.
    open(&c, &a, "#/peers").await;
    fill(&c, "#peer-create-form input[name='name']", "made-in-ui").await;
    fill(
        &c,
        "#peer-create-form input[name='peer_hook_url']",
        "http://127.0.0.1:9/hooks/default/kite",
    )
    .await;
    fill(&c, "#peer-create-form input[name='outbound_token']", "tok").await;
    fill(&c, "#peer-create-form input[name='scopes']", "com.stripe.*").await;
    click(&c, "#peer-create-form button[type='submit']").await;
    wait_text(&c, "#peers-note", |t| t.contains("Added peer made-in-ui")).await;
    wait_text(&c, "tr[data-peer='made-in-ui'] td:nth-child(1)", |t| {
        t == "made-in-ui"
    })
    .await;
    let (_, v) = a.get("/api/federation/peers").await;
    let made = v["items"]
        .as_array()
        .and_then(|i| i.iter().find(|p| p["name"] == "made-in-ui").cloned())
        .unwrap_or_else(|| panic!("the peer is listed: {v}"));
    assert_eq!(made["scopes"], json!(["com.stripe.*"]), "{made}");
    let made_id = made["id"].as_str().expect("id").to_string();
    screenshot(&c, "peers").await;

    // A read key: the same lists, no forms, no buttons; and the API refuses its writes.
    click(&c, "#signout").await;
    sign_in(&c, &a.url, &read_key).await;
    wait_text(&c, "#who", |t| t.contains("read")).await;
    for (route, ready, form) in [
        (
            "#/peers",
            "tr[data-peer='made-in-ui'] td:nth-child(1)",
            "#peer-create-form",
        ),
        (
            "#/sources",
            "#sources-rows tr[data-source='billing'] td:nth-child(1)",
            "#source-create-form",
        ),
        ("#/keys", "#keys-view .readonly-hint", "#key-create-form"),
        (
            "#/invitations",
            "#invitations-view .readonly-hint",
            "#invite-create-form",
        ),
    ] {
        open(&c, &a, route).await;
        wait_text(&c, ready, |t| !t.is_empty()).await;
        if route == "#/peers" {
            wait_text(&c, "#peers-readonly", |t| t.contains("read only")).await;
        }
        assert!(!shown(&c, form).await, "{route}: no {form} for a read key");
        assert_eq!(
            count(&c, "main > section:not([hidden]) button[data-action]").await,
            0,
            "{route}: no actions for a read key"
        );
    }
    open(&c, &a, &format!("#/peer?id={made_id}")).await;
    wait_text(&c, "#peer-title", |t| t == "made-in-ui").await;
    assert!(
        !shown(&c, "#peer-edit-form").await,
        "no edit form for a read key"
    );
    open(&c, &a, "#/outbox?status=dead").await;
    wait_text(&c, "#outbox-title", |t| t == "Dead letters").await;
    assert!(
        !shown(&c, "#replay-matching").await,
        "no replay for a read key"
    );
    screenshot(&c, "read-key").await;
    for (method, path, body) in [
        ("POST", "/api/keys", json!({"permission": "read"})),
        (
            "POST",
            "/api/sources",
            json!({"name": "x", "scheme": "github", "secret": "s"}),
        ),
        ("POST", "/api/federation/invitations", json!({})),
        ("POST", "/api/federation/outbox/replay", json!({})),
    ] {
        assert_eq!(
            page_fetch(&c, method, path, body).await,
            json!(403),
            "{method} {path} with a read key"
        );
    }
    c.close().await.expect("close the browser");
}

#[tokio::test]
async fn a_federated_event_shows_its_origin_and_chain_in_the_live_tail() {
    let a = Instance::start_with("ui-tail-a", &[]).await;
    let b = Instance::start_with("ui-tail-b", &[]).await;
    kite_kit::client::peer_by_invitation(&a.client(), &b.client(), &["*"], 3)
        .await
        .expect("peered by invitation");
    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &b.url, &b.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;
    open(&c, &b, "#/tail").await;
    wait_text(&c, "#tail-state", |t| t.starts_with("live")).await;

    // An event that entered at A comes to B; B's tail says where it came from.
    post(&a, "evt_fed_1", "charge.succeeded").await;
    let row = "#tail-rows tr:nth-child(1)";
    wait_text(&c, &format!("{row} td:nth-child(5)"), |t| t == "evt_fed_1").await;
    wait_text(&c, &format!("{row} td:nth-child(3)"), |t| {
        t == "com.stripe.charge.succeeded"
    })
    .await;
    wait_text(&c, &format!("{row} td:nth-child(6)"), |t| t == "ui-tail-a").await;
    wait_text(&c, &format!("{row} td:nth-child(7)"), |t| {
        t.contains("ui-tail-a")
    })
    .await;
    screenshot(&c, "tail-federated").await;

    // A local event has neither.
    post(&b, "evt_local_1", "charge.succeeded").await;
    wait_text(&c, &format!("{row} td:nth-child(5)"), |t| {
        t == "evt_local_1"
    })
    .await;
    wait_text(&c, &format!("{row} td:nth-child(6)"), |t| t == "–").await;
    wait_text(&c, &format!("{row} td:nth-child(7)"), |t| t == "–").await;

    // B's events list and the event's story say the same.
    open(&c, &b, "#/events").await;
    wait_text(
        &c,
        "#events-rows tr[data-event='evt_fed_1'] td:nth-child(5)",
        |t| t == "ui-tail-a",
    )
    .await;
    click(&c, "#events-rows tr[data-event='evt_fed_1']").await;
    wait_text(&c, "#story-title", |t| t.contains("evt_fed_1")).await;
    wait_text(&c, "#story-meta dd[data-field='origin']", |t| {
        t == "ui-tail-a"
    })
    .await;
    wait_text(&c, "#story-meta dd[data-field='chain']", |t| {
        t.contains("ui-tail-a")
    })
    .await;
    screenshot(&c, "story-federated").await;
    c.close().await.expect("close the browser");
}

fn refuses_all(_: &str) -> u16 {
    400
}

/// Waits until the team's events list one of type `ty` whose text contains `has`.
async fn kite_event(a: &Instance, ty: &str, has: &str) -> Value {
    eventually(&format!("a {ty} event"), WAIT, || async {
        let (s, v) = a.get(&format!("/api/events?type={ty}&limit=1000")).await;
        assert_eq!(s, 200, "{v}");
        v["items"]
            .as_array()?
            .iter()
            .find(|it| it["event"].to_string().contains(has))
            .cloned()
    })
    .await
}

#[tokio::test]
async fn the_operational_view_sets_the_endpoint_and_shows_kite_events_newest_first() {
    let ops = Sink::start(takes_all).await;
    let picky = Sink::start(refuses_all).await;
    let a = Instance::start_with(
        "ui-ops",
        &[
            ("KITE_OPERATIONAL_WINDOW_MS", "1000"),
            ("KITE_RETRY_MAX_ATTEMPTS", "1"),
        ],
    )
    .await;
    let (s, v) = a
        .post(
            "/api/keys",
            json!({"permission": "read", "label": "viewer"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let read_key = v["key"].as_str().expect("key").to_string();
    let driver = Driver::start().await;
    let c = driver.browser().await;
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("admin")).await;

    // The nav link opens the view; none is set yet, and it says so.
    click(&c, "nav a[data-view='operational']").await;
    wait_attr(&c, "nav a[data-view='operational']", "class", |v| {
        v.contains("active")
    })
    .await;
    wait_text(&c, "#operational-none", |t| {
        t.contains("No operational endpoint")
    })
    .await;

    // Set from the form: the secret is shown once, and the API never shows it.
    let ops_url = format!("{}/ops", ops.url);
    fill(&c, "#operational-form input[name='url']", &ops_url).await;
    click(&c, "#operational-form button[type='submit']").await;
    let secret = wait_text(&c, "#secret-once-value", |t| t.starts_with("whsec_")).await;
    wait_text(&c, "#operational-note", |t| {
        t.contains("Set the operational endpoint")
    })
    .await;
    wait_text(&c, "#operational-fields dd[data-field='url']", |t| {
        t == ops_url
    })
    .await;
    let (s, v) = a.get("/api/operational-endpoint").await;
    assert_eq!((s, v["url"].as_str()), (200, Some(ops_url.as_str())), "{v}");
    assert!(!v.to_string().contains(&secret), "the API never shows it");
    // Saved again, it keeps its secret and shows none; once the view changes it is gone.
    click(&c, "#operational-form button[type='submit']").await;
    wait_text(&c, "#operational-note", |t| t.contains("secret is kept")).await;
    click(&c, "nav a[data-view='peers']").await;
    wait_attr(&c, "nav a[data-view='peers']", "class", |v| {
        v.contains("active")
    })
    .await;
    click(&c, "nav a[data-view='operational']").await;
    wait_text(&c, "#operational-fields dd[data-field='url']", |t| {
        t == ops_url
    })
    .await;
    assert!(
        !shown(&c, "#secret-once").await,
        "a secret is shown once only"
    );

    // A peer that refuses everything joins, and the event posted to it dies at once.
    add_peer(
        &a,
        "picky",
        &format!("{}/hooks", picky.url),
        "tok-x",
        &["*"],
        3,
    )
    .await;
    post(&a, "evt_dash_dead", "charge.succeeded").await;
    kite_event(&a, "kite.peer.joined", "picky").await;
    kite_event(&a, "kite.delivery.dead", "evt_dash_dead").await;

    // The feed shows both, the dead delivery with its event, count and error.
    let joined = "#operational-feed tr[data-type='kite.peer.joined']";
    let dead = "#operational-feed tr[data-type='kite.delivery.dead']";
    wait_text(&c, &format!("{joined} td:nth-child(3)"), |t| t == "picky").await;
    wait_text(&c, &format!("{dead} td:nth-child(3)"), |t| t == "picky").await;
    let detail = wait_text(&c, &format!("{dead} td:nth-child(4)"), |t| {
        t.contains("evt_dash_dead")
    })
    .await;
    assert!(
        detail.contains("1 dead") && detail.contains("400"),
        "the count and the peer's answer: {detail}"
    );
    let newest_first: Value = c
        .execute(
            "const t = [...document.querySelectorAll('#operational-feed tr')].map(r => r.dataset.type); \
             return t.indexOf('kite.delivery.dead') < t.indexOf('kite.peer.joined')",
            vec![],
        )
        .await
        .expect("the feed's order");
    assert_eq!(newest_first, json!(true), "newest first");

    // The endpoint got them: its delivered count says so.
    eventually("an operational event delivered", WAIT, || async {
        let (_, v) = a.get("/api/operational-endpoint").await;
        (v["delivered"].as_i64() >= Some(1)).then_some(())
    })
    .await;
    wait_text(&c, "#operational-fields dd[data-field='delivered']", |t| {
        t.parse::<i64>().is_ok_and(|n| n >= 1)
    })
    .await;
    assert!(
        ops.seen
            .lock()
            .expect("lock")
            .requests
            .iter()
            .any(|(_, _, body)| body.contains("kite.peer.joined")),
        "the join reached the endpoint"
    );
    screenshot(&c, "operational").await;

    // A row opens its story; the dead event's id opens that event's.
    click(&c, &format!("{joined} td:nth-child(2)")).await;
    wait_text(&c, "#story-title", |t| t.contains("kite.peer.joined")).await;
    click(&c, "nav a[data-view='operational']").await;
    click(&c, &format!("{dead} td:nth-child(4) a")).await;
    wait_text(&c, "#story-title", |t| t.contains("evt_dash_dead")).await;
    wait_text(&c, "#story-rows tr[data-peer='picky']", |t| {
        t.contains("dead")
    })
    .await;

    // Removed with two clicks; its events stay in the feed.
    click(&c, "nav a[data-view='operational']").await;
    let remove = "#operational-actions button[data-action='remove-operational']";
    click(&c, remove).await;
    wait_text(&c, remove, |t| t.contains("again")).await;
    click(&c, remove).await;
    wait_text(&c, "#operational-note", |t| {
        t.contains("Removed the operational endpoint")
    })
    .await;
    wait_text(&c, "#operational-none", |t| {
        t.contains("No operational endpoint")
    })
    .await;
    let (s, _) = a.get("/api/operational-endpoint").await;
    assert_eq!(s, 404);
    wait_text(&c, &format!("{joined} td:nth-child(3)"), |t| t == "picky").await;

    // A read key sees the feed, no form and no buttons; the API refuses it a PUT.
    click(&c, "#signout").await;
    sign_in(&c, &a.url, &read_key).await;
    wait_text(&c, "#who", |t| t.contains("read")).await;
    open(&c, &a, "#/operational").await;
    wait_text(&c, &format!("{dead} td:nth-child(3)"), |t| t == "picky").await;
    wait_text(&c, "#operational-view .readonly-hint", |t| {
        t.contains("read only")
    })
    .await;
    assert!(
        !shown(&c, "#operational-form").await,
        "no form for a read key"
    );
    assert_eq!(
        count(&c, "#operational-view button[data-action]").await,
        0,
        "no actions for a read key"
    );
    assert_eq!(
        page_fetch(
            &c,
            "PUT",
            "/api/operational-endpoint",
            json!({"url": "http://127.0.0.1:9/ops"}),
        )
        .await,
        json!(403),
        "the API refuses a read key's PUT"
    );
    c.close().await.expect("close the browser");
}
