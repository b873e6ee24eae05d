//! The web dashboard (`/ui`) in a real headless Chromium, driven over WebDriver
//! (chromedriver): sign in with an API key, see a peer, replay its dead row and watch it
//! deliver; a read key sees the same peers and gets no buttons.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::hostile::{Sink, WAIT};
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Whether the sink takes events (it refuses them, 400, until the test says so).
static SINK_TAKES: AtomicBool = AtomicBool::new(false);

fn sink_rule(_: &str) -> u16 {
    if SINK_TAKES.load(Ordering::SeqCst) {
        200
    } else {
        400
    }
}

/// chromedriver on a free loopback port, with its and Chromium's temporary files in a
/// directory of its own; stopped and removed on drop.
pub(crate) struct Driver {
    url: String,
    dir: TempDir,
    child: tokio::process::Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        // A test that failed before closing its session leaves its browser running: stop
        // every process started with this directory (the profile is in it).
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg(self.dir.0.as_os_str())
            .status();
    }
}

impl Driver {
    pub(crate) async fn start() -> Self {
        let port = free_port();
        let dir = TempDir::new("chromium");
        let child = tokio::process::Command::new(chromedriver())
            .env("TMPDIR", &dir.0)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; scripts/services chromium installs it)",
            );
        let url = format!("http://127.0.0.1:{port}");
        eventually(
            "chromedriver listening",
            Duration::from_secs(20),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        Self { url, dir, child }
    }

    /// A new headless Chromium session.
    pub(crate) async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium(),
                "args": [format!("--user-data-dir={}", self.dir.0.join("profile").display()),
                         "--headless=new".to_string(), "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1400,900"]
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

fn chromium() -> String {
    std::env::var("KITE_TEST_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn chromedriver() -> String {
    std::env::var("KITE_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into())
}

/// The text of the first element `css` finds, once it shows `want`.
pub(crate) async fn wait_text(c: &Client, css: &str, want: impl Fn(&str) -> bool) -> String {
    eventually(
        &format!("{css} to show what is wanted"),
        Duration::from_secs(30),
        || async {
            let text = c.find(Locator::Css(css)).await.ok()?.text().await.ok()?;
            want(&text).then_some(text)
        },
    )
    .await
}

pub(crate) async fn sign_in(c: &Client, base: &str, key: &str) {
    c.goto(&format!("{base}/ui")).await.expect("open /ui");
    c.wait()
        .for_element(Locator::Id("key"))
        .await
        .expect("the sign-in form")
        .send_keys(key)
        .await
        .expect("type the key");
    c.find(Locator::Id("signin"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("click sign in");
}

#[tokio::test]
async fn sign_in_see_a_peer_replay_its_dead_row_and_watch_it_deliver() {
    let sink = Sink::start(sink_rule).await;
    let a = Instance::start_with("ui", &[("KITE_RETRY_MAX_ATTEMPTS", "2")]).await;
    let (s, v) = a
        .post(
            "/api/federation/peers",
            json!({"name": "sink-peer", "peer_hook_url": format!("{}/hooks/default/kite", sink.url),
                   "outbound_token": "t"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = a
        .hook("orders", &stripe_event("evt_ui_1", "order.paid"))
        .await;
    assert_eq!(s, 202, "{v}");
    let dead = eventually("the refused row is dead", WAIT, || async {
        let rows = a.outbox("status=dead").await;
        (rows.len() == 1).then(|| rows[0].clone())
    })
    .await;
    let ce_id = dead["event_id"].as_str().expect("event id").to_string();
    let seq = dead["event_seq"].as_i64().expect("event seq");
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

    // A wrong key is refused on the page.
    sign_in(&c, &a.url, "kite_00000000_00000000000000000000000000000000").await;
    wait_text(&c, "#signin-error", |t| t.contains("unknown or revoked")).await;

    // The admin key: the peer, its dead row, and the buttons.
    c.goto(&format!("{}/ui", a.url)).await.expect("reload");
    sign_in(&c, &a.url, &a.key).await;
    wait_text(&c, "#who", |t| t.contains("default") && t.contains("admin")).await;
    let row = "tr[data-peer='sink-peer']";
    wait_text(&c, &format!("{row} td.dead"), |t| t == "1").await;
    let status = wait_text(&c, &format!("{row} td:nth-child(3)"), |t| !t.is_empty()).await;
    assert_eq!(status, "active");

    // The dead letters view lists it.
    c.goto(&format!("{}/ui#/outbox?status=dead", a.url))
        .await
        .expect("dead letters");
    wait_text(&c, "#outbox-rows tr td:nth-child(2)", |t| t == ce_id).await;
    wait_text(&c, "#outbox-rows tr td:nth-child(3)", |t| {
        t == "com.orders.order.paid"
    })
    .await;
    wait_text(&c, "#outbox-title", |t| t == "Dead letters").await;

    // The sink takes events now: replay from the peers view and watch it deliver.
    SINK_TAKES.store(true, Ordering::SeqCst);
    c.goto(&format!("{}/ui#/peers", a.url))
        .await
        .expect("peers");
    wait_text(&c, &format!("{row} td.dead"), |t| t == "1").await;
    c.find(Locator::Css(&format!("{row} button[data-action='replay']")))
        .await
        .expect("the replay button")
        .click()
        .await
        .expect("click replay");
    wait_text(&c, "#peers-note", |t| {
        t.contains("Replayed 1 dead delivery")
    })
    .await;
    wait_text(&c, &format!("{row} td.dead"), |t| t == "0").await;
    sink.assert_once(std::slice::from_ref(&ce_id)).await;
    c.goto(&format!("{}/ui#/outbox?peer=sink-peer", a.url))
        .await
        .expect("outbox");
    wait_text(&c, "#outbox-rows tr td.state", |t| t == "delivered").await;

    // The event's story tells the whole of it: refused, then delivered.
    c.goto(&format!("{}/ui#/events?id={seq}", a.url))
        .await
        .expect("story");
    let story = wait_text(&c, "#story-rows tr[data-peer='sink-peer']", |t| {
        t.contains("delivered")
    })
    .await;
    assert!(
        story.contains("400"),
        "the refused attempts are in the story: {story}"
    );

    // Pause and resume from the page.
    c.goto(&format!("{}/ui#/peers", a.url))
        .await
        .expect("peers");
    c.wait()
        .for_element(Locator::Css(&format!("{row} button[data-action='pause']")))
        .await
        .expect("pause button")
        .click()
        .await
        .expect("click pause");
    wait_text(&c, &format!("{row} td:nth-child(3)"), |t| t == "paused").await;
    let (_, p) = a.get("/api/federation/peers").await;
    assert_eq!(p["items"][0]["status"], "paused", "{p}");
    c.find(Locator::Css(&format!("{row} button[data-action='resume']")))
        .await
        .expect("resume button")
        .click()
        .await
        .expect("click resume");
    wait_text(&c, &format!("{row} td:nth-child(3)"), |t| t == "active").await;

    // The live tail shows an event as it comes in.
    c.goto(&format!("{}/ui#/tail", a.url)).await.expect("tail");
    wait_text(&c, "#tail-state", |t| t.starts_with("live")).await;
    let (s, _) = a
        .hook("orders", &stripe_event("evt_ui_2", "order.shipped"))
        .await;
    assert_eq!(s, 202);
    wait_text(&c, "#tail-rows tr td:nth-child(3)", |t| {
        t == "com.orders.order.shipped"
    })
    .await;

    // A handshake peer whose keys changed is refreshed from the page.
    let h = kite_kit::hostile::HostilePeer::start("ui-h")
        .await
        .expect("a peer");
    let (s, v) = a
        .post("/api/federation/invitations", json!({"scopes": ["*"]}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = h
        .join(v["invitation"].as_str().expect("invitation"), &["*"])
        .await;
    assert_eq!(s, 200, "{v}");
    h.rotate(Duration::from_secs(600));
    c.goto(&format!("{}/ui#/peers", a.url))
        .await
        .expect("peers");
    c.wait()
        .for_element(Locator::Css(
            "tr[data-peer='ui-h'] button[data-action='refresh']",
        ))
        .await
        .expect("the refresh button")
        .click()
        .await
        .expect("click refresh");
    wait_text(&c, "#peers-note", |t| {
        t.contains("ui-h: keys refreshed (2 pinned)")
    })
    .await;

    // A read key sees the peer and gets no buttons.
    c.find(Locator::Id("signout"))
        .await
        .expect("sign out")
        .click()
        .await
        .expect("click sign out");
    sign_in(&c, &a.url, &read_key).await;
    wait_text(&c, "#who", |t| t.contains("read")).await;
    c.goto(&format!("{}/ui#/peers", a.url))
        .await
        .expect("peers");
    wait_text(&c, &format!("{row} td:nth-child(1)"), |t| t == "sink-peer").await;
    wait_text(&c, "#peers-readonly", |t| t.contains("read only")).await;
    let buttons = c
        .find_all(Locator::Css(&format!("{row} button")))
        .await
        .expect("find buttons");
    assert!(buttons.is_empty(), "a read key gets no actions");
    let res: Value = c
        .execute(
            "return fetch('/api/federation/peers/' + arguments[0], {method: 'PATCH', \
             headers: {Authorization: 'Bearer ' + sessionStorage.getItem('kite.key'), \
             'Content-Type': 'application/json'}, body: '{\"status\":\"paused\"}'}).then(r => r.status)",
            vec![json!(p["items"][0]["id"])],
        )
        .await
        .expect("a PATCH with the page's key");
    assert_eq!(res, json!(403), "the API refuses a read key's action");
    c.close().await.expect("close the browser");
}
