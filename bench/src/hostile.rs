//! `kite-bench chaos --hostile`: hostile requests of every kind, mixed into the steady A→B
//! stream of a chaos run, while A's peer health and `/health` are watched. What a hostile
//! request must get is fixed per kind; any other answer, a parked peer or a failing
//! `/health` fails the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use kite_api::sources::NewSource;
use kite_api::types::{PeerHealth, PeerStatus};
use kite_kit::client::ApiClient;
use kite_wire::provider::Scheme;

/// The signed source hostile requests forge signatures for.
pub const SIGNED_SOURCE: &str = "signed";
/// A secret hostile requests carry in headers; it must never be stored anywhere.
pub const SECRET_MARKER: &str = "hostile-secret-7f3a";
const TEAM: &str = "default";
const POLL: Duration = Duration::from_millis(250);
const HALF_SENT: usize = 200;

/// One kind of hostile request, in schedule order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostileKind {
    /// A CloudEvent whose id holds a newline (400 invalid_attribute).
    NewlineId,
    /// A body 127 levels deep (400 too_deep).
    DeepBody,
    /// A body under the raw limit that is over it once forwarded (413).
    NearLimitBody,
    /// kitefed* extensions on a plain hook (400 reserved_extension).
    ForgedFederation,
    /// A CloudEvent claiming a legitimate event's id and source on another hook (202, and
    /// the legitimate event is still accepted and delivered).
    ClaimedIdentity,
    /// A JSON body with a `\u0000` escape (202).
    NulBody,
    /// A badly signed post to a signed source (401, or 429 once its address' bucket is empty).
    BadSignature,
    /// Credentials in headers (202; never stored or forwarded).
    CredentialHeaders,
    /// Connections holding half a request (closed by the server).
    HalfSentRequests,
    /// A 1 MiB first frame on `/ws` (closed by the server).
    HugeWsFrame,
}

impl HostileKind {
    /// Every kind, in the order the schedule cycles through them.
    pub const ALL: [HostileKind; 10] = [
        HostileKind::NewlineId,
        HostileKind::DeepBody,
        HostileKind::NearLimitBody,
        HostileKind::ForgedFederation,
        HostileKind::ClaimedIdentity,
        HostileKind::NulBody,
        HostileKind::BadSignature,
        HostileKind::CredentialHeaders,
        HostileKind::HalfSentRequests,
        HostileKind::HugeWsFrame,
    ];

    /// The answers that are right for this kind (a status, or 0 for "connection closed").
    pub fn expected(self) -> &'static [u16] {
        match self {
            HostileKind::NewlineId | HostileKind::DeepBody | HostileKind::ForgedFederation => {
                &[400]
            }
            HostileKind::NearLimitBody => &[413],
            HostileKind::ClaimedIdentity
            | HostileKind::NulBody
            | HostileKind::CredentialHeaders => &[202],
            HostileKind::BadSignature => &[401, 429],
            HostileKind::HalfSentRequests | HostileKind::HugeWsFrame => &[0],
        }
    }

    /// A short name for the table.
    pub fn name(self) -> &'static str {
        match self {
            HostileKind::NewlineId => "newline in the id",
            HostileKind::DeepBody => "127-deep body",
            HostileKind::NearLimitBody => "over the limit once forwarded",
            HostileKind::ForgedFederation => "kitefed* on a plain hook",
            HostileKind::ClaimedIdentity => "claims a legitimate event's identity",
            HostileKind::NulBody => "\\u0000 in the body",
            HostileKind::BadSignature => "bad signature",
            HostileKind::CredentialHeaders => "credentials in headers",
            HostileKind::HalfSentRequests => "200 half-sent requests",
            HostileKind::HugeWsFrame => "1 MiB /ws connect frame",
        }
    }
}

/// When the chaos run's faults were being injected, so that what a fault causes (a refused
/// connection, a 503, a peer parked while B is down) is not blamed on hostile traffic.
#[derive(Debug, Clone, Default)]
pub struct FaultWindows(std::sync::Arc<std::sync::Mutex<Vec<Window>>>);

/// A fault's start and, once it is over, its end.
type Window = (Instant, Option<Instant>);

/// How long after a fault its effects may last: a peer parked while B was down is probed
/// back within a few seconds, a delivery retried within its backoff.
pub const FAULT_GRACE: Duration = Duration::from_secs(6);

impl FaultWindows {
    /// Notes a fault starting now; answers its index for [`FaultWindows::end`].
    pub fn begin(&self) -> usize {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.push((Instant::now(), None));
        w.len() - 1
    }

    /// Notes that fault `i` is over.
    pub fn end(&self, i: usize) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = w.get_mut(i) {
            f.1 = Some(Instant::now());
        }
    }

    /// Whether `t` is within a fault or [`FAULT_GRACE`] after one.
    pub fn near(&self, t: Instant) -> bool {
        let w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.iter()
            .any(|(start, end)| t >= *start && end.is_none_or(|e| t <= e + FAULT_GRACE))
    }
}

/// What the hostile side did and saw.
#[derive(Debug, Clone, Default)]
pub struct HostileTally {
    /// Answers by kind and status (0: the server closed the connection).
    pub answers: BTreeMap<(HostileKind, u16), u64>,
    /// Requests answered otherwise than their kind expects (samples).
    pub unexpected: Vec<String>,
    /// Peer polls that found A's peer unreachable or paused.
    pub peer_parked: u64,
    /// Peer polls made.
    pub peer_polls: u64,
    /// `/health` answers other than 200, or no answer.
    pub health_failures: u64,
    /// Slowest `/health` answer.
    pub health_slowest: Duration,
    /// Polls that found the peer parked, or `/health` failing, and requests refused (no
    /// answer, 503), during a fault or its grace: the fault's doing, not counted above.
    pub during_faults: u64,
}

impl HostileTally {
    /// Hostile requests sent.
    pub fn sent(&self) -> u64 {
        self.answers.values().sum()
    }

    /// Every answer as expected, the peer never parked, `/health` always 200.
    pub fn passed(&self) -> bool {
        self.unexpected.is_empty() && self.peer_parked == 0 && self.health_failures == 0
    }

    /// Rows for the chaos table.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![(
            "hostile requests".to_owned(),
            format!("{} sent", self.sent()),
        )];
        for kind in HostileKind::ALL {
            let answers: Vec<String> = self
                .answers
                .iter()
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, s), n)| {
                    if *s == 0 {
                        format!("{n} closed")
                    } else {
                        format!("{n}× {s}")
                    }
                })
                .collect();
            rows.push((format!("  {}", kind.name()), answers.join(", ")));
        }
        rows.push((
            "unexpected hostile answers".to_owned(),
            if self.unexpected.is_empty() {
                "0".to_owned()
            } else {
                format!("{}: {}", self.unexpected.len(), self.unexpected.join("; "))
            },
        ));
        rows.push((
            "peer parked by hostile traffic".to_owned(),
            format!("{} of {} polls", self.peer_parked, self.peer_polls),
        ));
        rows.push((
            "A /health".to_owned(),
            format!(
                "{} failures, slowest {:.0} ms",
                self.health_failures,
                self.health_slowest.as_secs_f64() * 1000.0
            ),
        ));
        if self.during_faults > 0 {
            rows.push((
                "refused or parked during a fault".to_owned(),
                format!(
                    "{} (within a fault or {} s after it: the fault's doing)",
                    self.during_faults,
                    FAULT_GRACE.as_secs()
                ),
            ));
        }
        rows
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut m = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(body);
    hex::encode(m.finalize().into_bytes())
}

/// Gives A the signed source that hostile requests forge signatures for.
pub async fn prepare(client: &reqwest::Client, a_url: &str, key: &str) -> Result<()> {
    ApiClient::with_http(client.clone(), a_url, key)
        .create_source(&NewSource {
            name: SIGNED_SOURCE.into(),
            scheme: Scheme::HmacSha256,
            secret: "hostile-source-secret".into(),
            header: Some("x-signature".into()),
        })
        .await?;
    Ok(())
}

/// Sends one hostile request of `kind`; answers the status (0: closed by the server).
async fn send(
    client: &reqwest::Client,
    a_url: &str,
    kind: HostileKind,
    i: u64,
    claim_id: &str,
) -> Result<u16> {
    let hook = |s: &str| format!("{a_url}/hooks/{TEAM}/{s}");
    let ce = "application/cloudevents+json";
    let post = |url: String, body: Vec<u8>, ct: &str| {
        client
            .post(url)
            .header("content-type", ct.to_owned())
            .body(body)
    };
    let req = match kind {
        HostileKind::NewlineId => post(
            hook("acme"),
            json!({"specversion":"1.0","id":format!("h{i}\nx"),"source":"/s","type":"t"})
                .to_string()
                .into_bytes(),
            ce,
        ),
        HostileKind::DeepBody => post(
            hook("acme"),
            format!("{}{}", "[".repeat(127), "]".repeat(127)).into_bytes(),
            "application/json",
        ),
        HostileKind::NearLimitBody => post(
            hook("acme"),
            format!(r#"{{"type":"x","k":"{}"}}"#, "y".repeat(256 * 1024 - 3_000)).into_bytes(),
            "application/json",
        ),
        HostileKind::ForgedFederation => post(
            hook("acme"),
            json!({"specversion":"1.0","id":format!("h{i}"),"source":"/s","type":"t",
                   "kitefedorigin":"elsewhere","kitefedchain":"[\"elsewhere\"]","kitefedhops":1})
            .to_string()
            .into_bytes(),
            ce,
        ),
        HostileKind::ClaimedIdentity => post(
            hook("acme"),
            json!({"specversion":"1.0","id":claim_id,"source":format!("/hooks/{TEAM}/stripe"),
                   "type":"com.stripe.charge.succeeded"})
            .to_string()
            .into_bytes(),
            ce,
        ),
        HostileKind::NulBody => post(
            hook("stripe"),
            format!(r#"{{"id":"evt_hostile_nul_{i}","type":"x","note":"a\u0000b"}}"#).into_bytes(),
            "application/json",
        ),
        HostileKind::BadSignature => post(
            hook(SIGNED_SOURCE),
            br#"{"id":"forged","type":"x"}"#.to_vec(),
            "application/json",
        )
        .header("x-signature", hmac_hex(b"not the secret", b"{}")),
        HostileKind::CredentialHeaders => post(
            hook("gitlab"),
            json!({"object_kind":"push","id":format!("gl-{i}")})
                .to_string()
                .into_bytes(),
            "application/json",
        )
        .header("x-gitlab-token", SECRET_MARKER)
        .header("authorization", format!("Bearer {SECRET_MARKER}"))
        .header("cookie", format!("s={SECRET_MARKER}")),
        HostileKind::HalfSentRequests => return half_sent(a_url).await,
        HostileKind::HugeWsFrame => return huge_frame(a_url).await,
    };
    Ok(req.send().await?.status().as_u16())
}

/// Opens [`HALF_SENT`] connections that send half a request, and waits until the server
/// closed the first of them (its header deadline). Answers 0 when it did.
async fn half_sent(a_url: &str) -> Result<u16> {
    let addr = a_url.trim_start_matches("http://");
    let mut conns = Vec::with_capacity(HALF_SENT);
    for _ in 0..HALF_SENT {
        let mut c = tokio::net::TcpStream::connect(addr).await?;
        c.write_all(b"POST /hooks/default/stripe HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await?;
        conns.push(c);
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_secs(30), conns[0].read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok(0),
        Ok(Ok(_)) => Ok(1),
        Err(_) => Ok(2),
    }
}

/// Sends a 1 MiB first frame on `/ws`; answers 0 once the server closed the connection.
async fn huge_frame(a_url: &str) -> Result<u16> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/ws", a_url.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let _ = ws.send(Message::Text("x".repeat(1024 * 1024).into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    Ok(if closed { 0 } else { 1 })
}

/// Sends hostile requests of every kind in turn, one every `every` (each in a task of its
/// own, so a slow one never delays the schedule), and watches A's peers and `/health`,
/// until `stop` turns true. `claim_ids` are legitimate events' ids to claim.
pub async fn inject(
    client: reqwest::Client,
    a_url: String,
    key: String,
    every: Duration,
    claim_ids: Vec<String>,
    faults: FaultWindows,
    mut stop: watch::Receiver<bool>,
) -> HostileTally {
    let mut tally = HostileTally::default();
    // Half-sent connections add up to thousands of sockets held at once.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch_tick = tokio::time::interval(POLL);
    let mut tasks = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = watch_tick.tick() => watch_once(&client, &a_url, &key, &faults, &mut tally).await,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => record(&mut tally, &faults, done),
            _ = tick.tick() => {
                let kind = HostileKind::ALL[(i % HostileKind::ALL.len() as u64) as usize];
                let claim = claim_ids
                    .get((i / HostileKind::ALL.len() as u64) as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("evt_hostile_claim_{i}"));
                let (client, a_url) = (client.clone(), a_url.clone());
                tasks.spawn(async move {
                    let at = Instant::now();
                    (kind, at, send(&client, &a_url, kind, i, &claim).await)
                });
                i += 1;
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        record(&mut tally, &faults, done);
    }
    tally
}

fn record(
    tally: &mut HostileTally,
    faults: &FaultWindows,
    done: Result<(HostileKind, Instant, Result<u16>), tokio::task::JoinError>,
) {
    // A fault (A-ingress killed, the database away) refuses requests whatever they are.
    if let Ok((kind, at, answer)) = &done {
        let refused = match answer {
            Ok(s) => (*s == 0 || *s == 503) && !kind.expected().contains(s),
            Err(_) => true,
        };
        if refused && (faults.near(*at) || faults.near(Instant::now())) {
            tally.during_faults += 1;
            return;
        }
    }
    let done = done.map(|(kind, _, answer)| (kind, answer));
    match done {
        Ok((kind, Ok(status))) => {
            *tally.answers.entry((kind, status)).or_default() += 1;
            if !kind.expected().contains(&status) && tally.unexpected.len() < 10 {
                tally
                    .unexpected
                    .push(format!("{} answered {status}", kind.name()));
            }
        }
        Ok((kind, Err(e))) => {
            if tally.unexpected.len() < 10 {
                tally.unexpected.push(format!("{}: {e:#}", kind.name()));
            }
        }
        Err(e) => tally.unexpected.push(format!("hostile task failed: {e}")),
    }
}

async fn watch_once(
    client: &reqwest::Client,
    a_url: &str,
    key: &str,
    faults: &FaultWindows,
    tally: &mut HostileTally,
) {
    let started = Instant::now();
    let health = client.get(format!("{a_url}/health")).send().await;
    tally.health_slowest = tally.health_slowest.max(started.elapsed());
    if !matches!(&health, Ok(r) if r.status() == 200) {
        if faults.near(started) {
            tally.during_faults += 1;
        } else {
            tally.health_failures += 1;
        }
    }
    let peers = ApiClient::with_http(client.clone(), a_url, key)
        .list_peers()
        .await;
    if let Ok(v) = peers {
        tally.peer_polls += 1;
        let parked = v.items.iter().any(|p| {
            p.peer.health == PeerHealth::Unreachable || p.peer.status != PeerStatus::Active
        });
        if parked && faults.near(started) {
            tally.during_faults += 1;
        } else if parked {
            tally.peer_parked += 1;
        }
    }
}
