//! kite-http: the HTTP surface. Webhook intake (`/hooks/{team}/{source}`, handing events to
//! the ingest stage), the server-to-server endpoints (`s2s`), the admin API (`api`), `/ws`
//! and its RPC, the dashboard, the OpenAPI document and `/health`.

mod access;
mod api;
mod error;
mod hooks;
mod limits;
pub mod openapi;
mod rpc;
mod s2s;
pub mod server;
mod stream;
mod ui;

pub use limits::Rate;

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use kite_bus::Bus;
use kite_store::cache::{Cache, PeerSnapshot, SenderSnapshot};
use kite_store::notify::Notifications;
use kite_store::Store;
use tokio::sync::RwLock;

pub use error::ApiErr;

/// `/metrics` on the main listener: who may read it and what it answers.
#[derive(Clone)]
pub struct MetricsAccess {
    /// Renders the metrics in the Prometheus text format.
    pub render: Arc<dyn Fn() -> String + Send + Sync>,
    /// Client networks served without a token (`KITE_METRICS_ALLOW`; loopback by default).
    pub allow: Vec<ipnet::IpNet>,
    /// A bearer token that is served from anywhere (`KITE_METRICS_TOKEN`).
    pub token: Option<String>,
}

impl std::fmt::Debug for MetricsAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsAccess")
            .field("allow", &self.allow)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Ingress settings.
#[derive(Debug, Clone)]
pub struct IngressConfig {
    /// The build's version and git revision (`/health`).
    pub version: String,
    /// `/metrics` on this listener (None: not served here).
    pub metrics: Option<MetricsAccess>,
    /// This instance's id (answered as `X-Kite-Instance-Id`, loop checks).
    pub instance_id: String,
    /// The operator key that manages teams (`/api/teams`); none: the teams API answers 401.
    pub operator_key: Option<String>,
    /// The ingest stage's settings (a full queue answers 503).
    pub ingest: kite_ingest::IngestConfig,
    /// Stream connections a team may hold at once.
    pub stream_max_connections: usize,
    /// Stream connections one API key may hold at once.
    pub stream_max_per_key: usize,
    /// How long a stream connection may take no data before it is a slow consumer (4004).
    pub stream_stall: std::time::Duration,
    /// Refuse webhooks to sources that have no signature configuration.
    pub require_signed_hooks: bool,
    /// Accept peer URLs on loopback and private networks.
    pub allow_private_peers: bool,
    /// How long a rotated-out secret stays valid.
    pub secret_overlap: std::time::Duration,
    /// Ingest rate per team.
    pub team_rate: Rate,
    /// Federation inbound rate per trusted sender.
    pub sender_rate: Rate,
    /// Rate per client address of requests that fail authentication.
    pub anon_rate: Rate,
    /// Rate per handshake peer of its server-to-server calls (heartbeats, key queries,
    /// backfill pages).
    pub peer_rate: Rate,
    /// How long a new `/ws` connection has to send its connect frame.
    pub stream_connect_timeout: std::time::Duration,
    /// How often a stream looks for new events without a notice.
    pub stream_poll: std::time::Duration,
    /// How often a stream saves a named listener's cursor.
    pub stream_cursor_flush: std::time::Duration,
}

impl IngressConfig {
    /// The defaults for an instance: ingest's (an ingest queue of 20,000, one writer
    /// committing up to 1,000 events at once with 64 publishes in flight), streams cut off after
    /// a 10 s stall, 100 connections a team and 20 a key, a connect frame within 5 s, a poll
    /// every second and cursors saved every 250 ms, unsigned hooks accepted, private peers
    /// refused, a 24 h secret overlap, 10,000/s (burst 20,000) a team and a sender, 20/s
    /// (burst 100) of failed authentication an address, 10/s (burst 50) of server-to-server
    /// calls a peer.
    pub fn new(instance_id: &str) -> Self {
        use std::time::Duration;
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            metrics: None,
            instance_id: instance_id.to_string(),
            operator_key: None,
            ingest: kite_ingest::IngestConfig::new(instance_id),
            stream_max_connections: 100,
            stream_max_per_key: 20,
            stream_stall: Duration::from_secs(10),
            require_signed_hooks: false,
            allow_private_peers: false,
            secret_overlap: Duration::from_secs(24 * 3600),
            team_rate: Rate {
                per_second: 10_000,
                burst: 20_000,
            },
            sender_rate: Rate {
                per_second: 10_000,
                burst: 20_000,
            },
            anon_rate: Rate {
                per_second: 20,
                burst: 100,
            },
            peer_rate: Rate {
                per_second: 10,
                burst: 50,
            },
            stream_connect_timeout: Duration::from_secs(5),
            stream_poll: Duration::from_secs(1),
            stream_cursor_flush: Duration::from_millis(250),
        }
    }
}

/// Shared state of the HTTP handlers.
pub struct AppState {
    store: Store,
    bus: Arc<Bus>,
    senders: Cache<SenderSnapshot>,
    /// The peers (shared with the ingest writers, which route at ingest).
    peers: Arc<Cache<PeerSnapshot>>,
    fed: Arc<kite_federation::Federation>,
    teams: RwLock<HashSet<String>>,
    ingest: kite_ingest::Ingest,
    notes: Notifications,
    cfg: IngressConfig,
    streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    /// The OpenAPI document of the routes served (`/api/openapi.json`), as JSON text.
    openapi: std::sync::OnceLock<String>,
    team_limit: limits::Limiter,
    sender_limit: limits::Limiter,
    anon_limit: limits::Limiter,
    fed_limit: limits::Limiter,
    /// The (team, source) pairs this process noted taking unsigned posts, and when.
    unsigned_seen:
        Arc<std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>>,
}

impl AppState {
    /// Notes (in the background, at most once an hour a source and process) that a hook
    /// source stored an unsigned event, so the sources listing marks it. What it remembers
    /// is bounded: 10,000 pairs, forgotten all at once when full (the next posts note again).
    pub(crate) fn note_unsigned(&self, team: &str, source: &str) {
        const AGAIN_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);
        let key = (team.to_owned(), source.to_owned());
        {
            // Marked before the write, so a burst of posts makes one write; a failed write
            // takes the mark back.
            let Ok(mut seen) = self.unsigned_seen.lock() else {
                return;
            };
            if seen.get(&key).is_some_and(|at| at.elapsed() < AGAIN_AFTER) {
                return;
            }
            if seen.len() >= 10_000 {
                seen.clear();
            }
            seen.insert(key.clone(), std::time::Instant::now());
        }
        let (store, seen) = (self.store.clone(), Arc::clone(&self.unsigned_seen));
        tokio::spawn(async move {
            if let Err(e) = store.note_unsigned_source(&key.0, &key.1).await {
                tracing::debug!(error = %e, "cannot note an unsigned source");
                if let Ok(mut seen) = seen.lock() {
                    seen.remove(&key);
                }
            }
        });
    }

    /// The most events one batch from a peer may carry: [`kite_wire::batch::MAX_EVENTS`],
    /// or fewer when a sender's rate burst is smaller.
    pub(crate) fn batch_max(&self) -> usize {
        let max = kite_wire::batch::MAX_EVENTS;
        self.sender_limit.burst().map_or(max, |b| b.clamp(1, max))
    }

    /// The `source` label of a hook request's metrics and the name of an unsigned source's
    /// rate bucket: `kite`, a provider's name, or a source configured for the team; every
    /// other name is `other`, so junk in a URL makes no series and no bucket.
    pub(crate) async fn source_label<'a>(&self, team: &str, source: &'a str) -> &'a str {
        let configured = || async {
            self.senders
                .get()
                .await
                .is_ok_and(|s| s.source(team, source).is_some())
        };
        if source == kite_wire::event::FEDERATION_SOURCE
            || kite_wire::provider::Scheme::parse(source).is_some()
            || configured().await
        {
            source
        } else {
            "other"
        }
    }

    /// True if the team exists (cached once seen).
    async fn team_known(&self, team: &str) -> Result<bool, ApiErr> {
        if self.teams.read().await.contains(team) {
            return Ok(true);
        }
        let known = self.store.team_exists(team).await?;
        if known {
            self.teams.write().await.insert(team.to_string());
        }
        Ok(known)
    }
}

/// Builds the HTTP app and starts its group-commit writers.
pub fn app(
    store: Store,
    bus: Arc<Bus>,
    lane: Arc<kite_bus::LocalLane<kite_store::outbox::DeliveryRow>>,
    fed: Arc<kite_federation::Federation>,
    notes: Notifications,
    cfg: IngressConfig,
) -> Router {
    let peers = Arc::new(Cache::new(store.clone(), notes.config.clone()));
    let ingest =
        kite_ingest::Ingest::start(store.clone(), bus.clone(), lane, peers.clone(), &cfg.ingest);
    let state = Arc::new(AppState {
        senders: Cache::new(store.clone(), notes.config.clone()),
        peers,
        fed,
        store,
        bus,
        teams: RwLock::new(HashSet::new()),
        ingest,
        notes,
        streams: std::sync::Mutex::new(std::collections::HashMap::new()),
        openapi: std::sync::OnceLock::new(),
        team_limit: limits::Limiter::new(cfg.team_rate, "team ingest"),
        sender_limit: limits::Limiter::new(cfg.sender_rate, "trusted sender"),
        anon_limit: limits::Limiter::new(cfg.anon_rate, "unauthenticated request"),
        fed_limit: limits::Limiter::new(cfg.peer_rate, "peer server-to-server"),
        unsigned_seen: Arc::default(),
        cfg,
    });
    // Buckets of callers gone quiet are dropped, so the limiters' maps stay bounded.
    let weak = Arc::downgrade(&state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            for l in [
                &st.team_limit,
                &st.sender_limit,
                &st.anon_limit,
                &st.fed_limit,
            ] {
                l.forget_quiet();
            }
        }
    });
    let (router, api) = openapi::routes().split_for_parts();
    let _ = state.openapi.set(openapi::finish(api));
    let instance = state.cfg.instance_id.clone();
    outer(router, &instance).with_state(state)
}

/// The layers every answer goes through, whatever its route: a path kite does not serve is a
/// 404 in the documented JSON form, every error is that form, bodies are bounded, and the
/// instance names itself.
fn outer<S: Clone + Send + Sync + 'static>(router: Router<S>, instance_id: &str) -> Router<S> {
    let instance = HeaderValue::from_str(instance_id).ok();
    router
        .fallback(no_route)
        .layer(axum::middleware::map_response(error::as_json))
        .layer(axum::extract::DefaultBodyLimit::max(
            kite_wire::event::MAX_BODY_BYTES,
        ))
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let instance = instance.clone();
            async move {
                if let Some(v) = instance {
                    r.headers_mut()
                        .insert(kite_wire::signature::INSTANCE_ID_HEADER, v);
                }
                r
            }
        }))
}

/// Any path kite does not serve: 404 in the documented JSON form.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiErr {
    ApiErr(kite_wire::ApiError::not_found(format!(
        "no route for {method} {}",
        uri.path()
    )))
}

/// What `/health` answers.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok`, or `unavailable` when a service it needs is unreachable.
    status: &'static str,
    /// `ok` or `unreachable`.
    postgres: &'static str,
    /// `ok` or `unreachable`.
    rabbitmq: &'static str,
    /// The version this instance runs and the git revision it was built from
    /// (`0.1.0 (cc8f695)`), as `kite --version` names them.
    version: String,
    /// What is unreachable (when `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<kite_wire::error::ErrorDetail>,
}

/// `GET /health`.
#[utoipa::path(get, path = "/health", tag = "operations", security(()),
    summary = "Whether this instance reaches its database and broker",
    responses(
        (status = 200, description = "Both reachable", body = Health),
        (status = 503, description = "One is unreachable", body = Health)))]
async fn health(State(st): State<Arc<AppState>>) -> Response {
    let db = st.store.ping().await.is_ok();
    let broker = st.bus.healthy().await;
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let mut h = Health {
        status: "ok",
        postgres: word(db),
        rabbitmq: word(broker),
        version: st.cfg.version.clone(),
        error: None,
    };
    if db && broker {
        return Json(h).into_response();
    }
    let down: Vec<&str> = [(!db).then_some("postgres"), (!broker).then_some("rabbitmq")]
        .into_iter()
        .flatten()
        .collect();
    h.status = "unavailable";
    h.error = Some(kite_wire::error::ErrorDetail {
        code: kite_wire::Code::Unavailable.as_str().to_string(),
        message: format!("unreachable: {}", down.join(", ")),
        extra: Default::default(),
    });
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(h)).into_response()
}

/// `GET /metrics`: the Prometheus text format, to a client in `KITE_METRICS_ALLOW` (loopback
/// by default) or one that presents `KITE_METRICS_TOKEN` as a bearer token; 403 otherwise.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    summary = "Prometheus metrics (to KITE_METRICS_ALLOW addresses, or with KITE_METRICS_TOKEN)",
    responses((status = 200, description = "The text exposition format", content_type = "text/plain"),
              (status = 403, description = "Neither an allowed address nor the token")))]
async fn metrics_text(
    State(st): State<Arc<AppState>>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiErr> {
    let Some(m) = &st.cfg.metrics else {
        return Err(ApiErr(kite_wire::ApiError::not_found(
            "this process serves no metrics",
        )));
    };
    let ip = client.ip().to_canonical();
    let by_address = m.allow.iter().any(|n| n.contains(&ip));
    let by_token = match (&m.token, hooks::bearer(&headers)) {
        (Some(want), Some(got)) => kite_wire::token::secret_eq(want, got),
        _ => false,
    };
    if !(by_address || by_token) {
        // A refusal is charged to the client address' bucket, so tokens cannot be guessed
        // at speed (429 once it is spent).
        st.anon_limit.check(&ip.to_string())?;
        return Err(ApiErr(kite_wire::ApiError::new(
            kite_wire::Code::Forbidden,
            "metrics are served to the addresses of KITE_METRICS_ALLOW (loopback by default) \
             or with Authorization: Bearer <KITE_METRICS_TOKEN>",
        )));
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (m.render)(),
    )
        .into_response())
}

/// `GET /api/openapi.json`.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    summary = "This document: every route kite serves, generated from its code",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
async fn openapi_json(State(st): State<Arc<AppState>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        st.openapi.get().cloned().unwrap_or_default(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    /// The routes that need no database (the dashboard's files), under the layers every
    /// answer goes through.
    fn stateless() -> Router {
        outer(
            Router::new()
                .route("/ui", axum::routing::get(ui::page))
                .route("/ui/app.js", axum::routing::get(ui::script))
                .route("/ui/app.css", axum::routing::get(ui::style)),
            "oneshot",
        )
    }

    async fn call(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
        let res = stateless().oneshot(req).await.expect("answer");
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 22).await.expect("body");
        (parts.status, parts.headers, bytes.to_vec())
    }

    fn get(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn the_dashboard_is_served_with_its_policy_and_the_instance_named() {
        for (path, kind) in [
            ("/ui", "text/html"),
            ("/ui/app.js", "text/javascript"),
            ("/ui/app.css", "text/css"),
        ] {
            let (status, headers, body) = call(get(path)).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
            assert!(header("content-type").starts_with(kind), "{path}");
            assert!(header("content-security-policy").contains("default-src 'none'"));
            assert_eq!(header("x-content-type-options"), "nosniff");
            assert_eq!(header(kite_wire::signature::INSTANCE_ID_HEADER), "oneshot");
            assert!(!body.is_empty(), "{path}");
        }
    }

    #[tokio::test]
    async fn what_kite_does_not_serve_is_an_error_in_the_documented_form() {
        // An unknown path: 404 `not_found`, naming the path.
        let (status, headers, body) = call(get("/nowhere")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["error"]["code"], "not_found", "{v}");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nowhere")));
        assert_eq!(
            headers
                .get(kite_wire::signature::INSTANCE_ID_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("oneshot")
        );
        // A method the route does not take: 405, as JSON too.
        let req = Request::delete("/ui").body(Body::empty()).expect("request");
        let (status, _, body) = call(req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
}
