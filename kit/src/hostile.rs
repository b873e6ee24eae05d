//! A hostile peer for the tests: a fake kite server on loopback with its own Ed25519 keys,
//! its descriptor and every server-to-server endpoint (accept, heartbeat, key query,
//! backfill, the federation hook). It joins a genuine instance through a genuine invitation
//! (or invites one), answers honestly by default, and misbehaves as a test tells it to:
//! other terms, forged or unsigned events, relayed or replayed requests, huge or trickled
//! answers, fake keys. Everything it receives is recorded, so a test can replay it
//! elsewhere or check that nothing reached it.
//!
//! Built with the `hostile` feature (only the tests use it).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use kite_wire::identity::{self, SecretKey, Target};
use kite_wire::peering::{
    self, AcceptRequest, AcceptResponse, Endpoints, Heartbeat, Invitation, KeyQuery, PublishedKey,
    ServerDescriptor, Terms,
};
use kite_wire::provenance;
use serde_json::{json, Value};

/// How one endpoint of the hostile peer answers.
#[derive(Debug, Clone, Default)]
pub enum Answer {
    /// As an honest kite server would.
    #[default]
    Honest,
    /// This status and JSON body.
    Json(u16, Value),
    /// This status and a body of this many bytes, streamed (never held in memory here).
    Huge(u16, u64),
    /// This status, then a body that sends one byte every half second, forever.
    Trickle(u16),
}

/// What the hostile peer does; a test changes it at any time ([`HostilePeer::set`]).
#[derive(Debug, Clone, Default)]
pub struct Behavior {
    /// `GET /.well-known/kite/server`.
    pub descriptor: Answer,
    /// `POST /federation/v1/teams/{team}/accept` (a genuine server accepting its invitation).
    pub accept: Answer,
    /// `POST .../heartbeat`.
    pub heartbeat: Answer,
    /// `POST .../keys/query`.
    pub keys_query: Answer,
    /// `POST .../backfill`.
    pub backfill: Answer,
    /// `POST /hooks/{team}/kite`.
    pub hook: Answer,
    /// Keys it vouches for when asked about another server: (server, key) pairs.
    pub vouches: Vec<(String, PublishedKey)>,
    /// The events an honest backfill page holds (each a forwarded event's JSON text).
    pub page: Vec<String>,
}

/// One request the hostile peer received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its method.
    pub method: String,
    /// Its path.
    pub path: String,
    /// Its headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Its body.
    pub body: Bytes,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One of its identity keys.
#[derive(Debug, Clone)]
pub struct Key {
    /// As published.
    pub published: PublishedKey,
    /// The private half.
    pub secret: SecretKey,
}

impl Key {
    /// A new key, valid from now.
    pub fn generate() -> Self {
        let secret = SecretKey::generate();
        Self {
            published: PublishedKey {
                key_id: identity::new_key_id(),
                public_key: secret.public().to_base64(),
                valid_from: Utc::now(),
                valid_until: None,
            },
            secret,
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    url: String,
    keys: Vec<Key>,
    behavior: Behavior,
    seen: Vec<Seen>,
    /// What its last invitation offered.
    offer: Option<Terms>,
    /// The protocol versions it says it speaks (descriptor, heartbeats).
    versions: Vec<String>,
}

/// The hostile peer: a fake kite server on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct HostilePeer {
    /// The server name it claims (as its descriptor says it).
    pub name: String,
    /// Its base URL.
    pub url: String,
    shared: Arc<Mutex<Shared>>,
    http: reqwest::Client,
}

/// An answer from a genuine instance: status and JSON body (Null when it is not JSON).
pub type Reply = (u16, Value);

/// A signed request the hostile peer sent: the answer, and what it sent (to replay it).
#[derive(Debug, Clone)]
pub struct Sent {
    /// The answer.
    pub reply: Reply,
    /// The headers sent.
    pub headers: Vec<(String, String)>,
    /// The body sent.
    pub body: Vec<u8>,
}

impl HostilePeer {
    /// Starts a hostile peer named `name` on a free loopback port.
    pub async fn start(name: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let shared = Arc::new(Mutex::new(Shared {
            name: name.to_string(),
            url: url.clone(),
            keys: vec![Key::generate()],
            behavior: Behavior::default(),
            seen: Vec::new(),
            offer: None,
            versions: peering::PROTOCOL_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect(),
        }));
        let app = Router::new()
            .route(peering::DESCRIPTOR_PATH, get(descriptor))
            .route("/federation/v1/teams/{team}/accept", post(accept))
            .route("/federation/v1/teams/{team}/heartbeat", post(heartbeat))
            .route("/federation/v1/teams/{team}/keys/query", post(keys_query))
            .route("/federation/v1/teams/{team}/backfill", post(backfill))
            .route("/hooks/{team}/kite", post(hook))
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            name: name.to_string(),
            url,
            shared,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(std::io::Error::other)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes what it does.
    pub fn set(&self, change: impl FnOnce(&mut Behavior)) {
        change(&mut self.lock().behavior);
    }

    /// Says it speaks these federation protocol versions from now on.
    pub fn speak(&self, versions: &[&str]) {
        self.lock().versions = versions.iter().map(|v| v.to_string()).collect();
    }

    /// Every request it received, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.lock().seen.clone()
    }

    /// The requests it received on paths ending with `suffix`.
    pub fn seen_at(&self, suffix: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path.ends_with(suffix))
            .collect()
    }

    /// Its keys, the current (signing) one first.
    pub fn keys(&self) -> Vec<Key> {
        self.lock().keys.clone()
    }

    /// The key it signs with now.
    pub fn key(&self) -> Key {
        self.lock().keys[0].clone()
    }

    /// Rotates: a new key signs from now on; the old one stays published until `overlap`
    /// from now. Answers the new key.
    pub fn rotate(&self, overlap: Duration) -> Key {
        let new = Key::generate();
        let mut g = self.lock();
        for k in &mut g.keys {
            if k.published.valid_until.is_none() {
                k.published.valid_until =
                    Some(Utc::now() + chrono::Duration::from_std(overlap).unwrap_or_default());
            }
        }
        g.keys.insert(0, new.clone());
        new
    }

    /// Its descriptor as it serves it honestly.
    pub fn descriptor(&self) -> ServerDescriptor {
        let g = self.lock();
        honest_descriptor(&g)
    }

    /// An invitation of its own (for a genuine server to accept), offering `offer`.
    pub fn invitation(&self, offer: Terms) -> String {
        self.lock().offer = Some(offer.clone());
        Invitation {
            url: self.url.clone(),
            team: "default".into(),
            server_name: self.name.clone(),
            token: Invitation::mint_token(),
            offer,
        }
        .encode()
    }

    /// The headers signing `body` as this peer with `key`, for `target`.
    pub fn sign_with(&self, key: &Key, target: &Target<'_>, body: &[u8]) -> Vec<(String, String)> {
        identity::signed_headers(
            &self.name,
            &key.published.key_id,
            &key.secret,
            target,
            &format!("msg_{}", uuid::Uuid::now_v7().simple()),
            Utc::now().timestamp(),
            body,
        )
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Sends a request with exactly these headers and body (a replay, a relay).
    pub async fn send_raw(
        &self,
        url: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut req = self.http.post(url).header("content-type", content_type);
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("content-type") && !k.eq_ignore_ascii_case("content-length")
            {
                req = req.header(k, v);
            }
        }
        match req.body(body).send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!({"transport_error": e.to_string()})),
        }
    }

    /// POSTs `body` to `base` + `path`, signed with `key` (its current one by default) for
    /// `destination`.
    pub async fn post(
        &self,
        base: &str,
        destination: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        key: Option<&Key>,
    ) -> Sent {
        let key = key.cloned().unwrap_or_else(|| self.key());
        let target = Target {
            method: "POST",
            destination,
            path,
        };
        let headers = self.sign_with(&key, &target, &body);
        let reply = self
            .send_raw(
                &format!("{base}{path}"),
                &headers,
                content_type,
                body.clone(),
            )
            .await;
        Sent {
            reply,
            headers,
            body,
        }
    }

    /// The same server claiming another name (in its requests and accept requests; its
    /// descriptor still says its own).
    pub fn claiming(&self, name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..self.clone()
        }
    }

    /// Accepts a genuine server's invitation as this peer: POSTs its accept request (its
    /// descriptor under the name it claims, the scopes it will send) signed for the inviter.
    pub async fn join(&self, invitation: &str, scopes: &[&str]) -> Reply {
        self.join_with(invitation, scopes, |_| {}).await
    }

    /// [`HostilePeer::join`] with the accept request changed by `change` before it is
    /// signed.
    pub async fn join_with(
        &self,
        invitation: &str,
        scopes: &[&str],
        change: impl FnOnce(&mut AcceptRequest),
    ) -> Reply {
        let Ok(inv) = Invitation::decode(invitation) else {
            return (0, json!({"error": "not an invitation"}));
        };
        let mut server = self.descriptor();
        server.server_name = self.name.clone();
        let mut request = AcceptRequest {
            token: inv.token.clone(),
            server,
            team: "default".into(),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            max_hops: 3,
        };
        change(&mut request);
        let path = format!("/federation/v1/teams/{}/accept", inv.team);
        self.post(
            &inv.url,
            &inv.server_name,
            &path,
            "application/json",
            serde_json::to_vec(&request).unwrap_or_default(),
            None,
        )
        .await
        .reply
    }

    /// A federated event of type `ty` as this peer forwards what enters the federation
    /// here: origin and chain itself, one hop, signed with its current key.
    pub fn event(&self, ty: &str, id: &str) -> String {
        let text = json!({
            "specversion": "1.0", "id": id, "source": "/hooks/default/hostile",
            "type": ty, "datacontenttype": "application/json", "data": {"id": id},
            "kitefedorigin": self.name, "kitefedchain": format!("[\"{}\"]", self.name),
            "kitefedhops": 1
        })
        .to_string();
        let key = self.key();
        provenance::sign_text(&text, &self.name, &key.published.key_id, &key.secret).unwrap_or(text)
    }

    /// Signs a federated event's text as `origin` with `key` (any key: to forge).
    pub fn sign_as(&self, text: &str, origin: &str, key: &Key) -> String {
        provenance::sign_text(text, origin, &key.published.key_id, &key.secret)
            .unwrap_or_else(|_| text.to_string())
    }

    /// POSTs a federated event (its JSON text) to a genuine instance's hook.
    pub async fn send_event(&self, to: (&str, &str), text: &str) -> Reply {
        self.post(
            to.0,
            to.1,
            "/hooks/default/kite",
            "application/cloudevents+json",
            text.as_bytes().to_vec(),
            None,
        )
        .await
        .reply
    }

    /// Sends a heartbeat listing `keys` (its own by default), signed with `key` (its
    /// current one by default), to a genuine instance `to` = (url, server name).
    pub async fn heartbeat(
        &self,
        to: (&str, &str),
        keys: Option<Vec<PublishedKey>>,
        key: Option<&Key>,
    ) -> Sent {
        let hb = Heartbeat {
            server_name: self.name.clone(),
            team: "default".into(),
            keys: keys.unwrap_or_else(|| self.keys().into_iter().map(|k| k.published).collect()),
            sent_at: Utc::now(),
            protocol_versions: self.lock().versions.clone(),
        };
        let body = serde_json::to_vec(&hb).unwrap_or_default();
        self.post(
            to.0,
            to.1,
            "/federation/v1/teams/default/heartbeat",
            "application/json",
            body,
            key,
        )
        .await
    }

    /// Asks a genuine instance for the key `key_id` of `server`.
    pub async fn key_query(&self, to: (&str, &str), server: &str, key_id: &str) -> Reply {
        let body = serde_json::to_vec(&KeyQuery {
            server_name: server.into(),
            key_id: key_id.into(),
        })
        .unwrap_or_default();
        self.post(
            to.0,
            to.1,
            "/federation/v1/teams/default/keys/query",
            "application/json",
            body,
            None,
        )
        .await
        .reply
    }
}

fn honest_descriptor(g: &Shared) -> ServerDescriptor {
    ServerDescriptor {
        server_name: g.name.clone(),
        keys: g.keys.iter().map(|k| k.published.clone()).collect(),
        protocol_versions: g.versions.clone(),
        endpoints: Endpoints::at(&g.url),
    }
}

type St = State<Arc<Mutex<Shared>>>;

fn record(st: &St, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Behavior {
    let mut g = st.0.lock().unwrap_or_else(|p| p.into_inner());
    g.seen.push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body: body.clone(),
    });
    g.behavior.clone()
}

/// Answers as `answer` says, or with `honest` for [`Answer::Honest`].
fn respond(answer: &Answer, honest: impl FnOnce() -> Response) -> Response {
    match answer {
        Answer::Honest => honest(),
        Answer::Json(status, v) => (
            StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
            axum::Json(v.clone()),
        )
            .into_response(),
        Answer::Huge(status, bytes) => {
            const CHUNK: usize = 64 * 1024;
            let chunk = Bytes::from(vec![b' '; CHUNK]);
            let n = bytes.div_ceil(CHUNK as u64);
            let stream =
                futures::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                [("content-type", "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Answer::Trickle(status) => {
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), ()))
            });
            (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                [("content-type", "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
    }
}

async fn descriptor(st: St, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let b = record(&st, &method, &uri, &headers, &Bytes::new());
    let d = honest_descriptor(&st.0.lock().unwrap_or_else(|p| p.into_inner()));
    respond(&b.descriptor, || axum::Json(d).into_response())
}

async fn accept(
    st: St,
    Path(team): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let b = record(&st, &method, &uri, &headers, &body);
    let (name, offer) =
        st.0.lock()
            .map(|g| (g.name.clone(), g.offer.clone()))
            .unwrap_or_default();
    respond(&b.accept, || {
        let Ok(req) = serde_json::from_slice::<AcceptRequest>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let offer = offer.unwrap_or(Terms {
            scopes: vec!["*".into()],
            max_hops: 3,
        });
        axum::Json(AcceptResponse {
            server_name: name,
            team: team.into(),
            scopes: offer.scopes,
            max_hops: offer.max_hops,
            your_scopes: req.scopes.unwrap_or_else(|| vec!["*".into()]),
            your_max_hops: req.max_hops,
        })
        .into_response()
    })
}

async fn heartbeat(st: St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let b = record(&st, &method, &uri, &headers, &body);
    let name = st.0.lock().map(|g| g.name.clone()).unwrap_or_default();
    respond(&b.heartbeat, || {
        axum::Json(json!({"status": "ok", "server_name": name})).into_response()
    })
}

async fn keys_query(st: St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let b = record(&st, &method, &uri, &headers, &body);
    let own = {
        let g = st.0.lock().unwrap_or_else(|p| p.into_inner());
        (g.name.clone(), honest_descriptor(&g).keys)
    };
    respond(&b.keys_query, || {
        let Ok(q) = serde_json::from_slice::<KeyQuery>(&body) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let keys: Vec<PublishedKey> = if q.server_name == own.0 {
            own.1.into_iter().filter(|k| k.key_id == q.key_id).collect()
        } else {
            b.vouches
                .iter()
                .filter(|(s, k)| *s == q.server_name && k.key_id == q.key_id)
                .map(|(_, k)| k.clone())
                .collect()
        };
        if keys.is_empty() {
            return StatusCode::NOT_FOUND.into_response();
        }
        axum::Json(json!({"server_name": q.server_name, "keys": keys})).into_response()
    })
}

async fn backfill(st: St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let b = record(&st, &method, &uri, &headers, &body);
    respond(&b.backfill, || {
        // Each event byte for byte as the test made it.
        let events: Vec<Box<serde_json::value::RawValue>> = b
            .page
            .iter()
            .filter_map(|t| serde_json::value::RawValue::from_string(t.clone()).ok())
            .collect();
        axum::Json(json!({"events": events, "next_cursor": null})).into_response()
    })
}

async fn hook(st: St, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let b = record(&st, &method, &uri, &headers, &body);
    respond(&b.hook, || {
        (
            StatusCode::ACCEPTED,
            axum::Json(json!({"status": "accepted"})),
        )
            .into_response()
    })
}
