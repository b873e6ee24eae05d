//! `POST /hooks/{team}/{source}`: webhooks and federated events in.

use kite_wire::Code;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use kite_federation::provenance::{Sender, VerifiedEvent};
use kite_federation::ReplayClaim;
use kite_store::cache::{PeerSnapshot, SenderSnapshot};
use kite_store::events::{InsertOutcome, NewEvent};
use kite_wire::batch::HookStatus;
use kite_wire::event::{
    build_event, validate_source_name, Hook, FEDERATION_SOURCE, MAX_BODY_BYTES,
};
use kite_wire::ids::EventSeq;
use kite_wire::provider::Scheme;
use kite_wire::trace::otel;
use kite_wire::{batch, ApiError};

use crate::{ApiErr, AppState};

mod auth;

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The request's body, or 413 when it is too large (400 when it cannot be read).
pub(crate) fn body_or_413(
    body: Result<Bytes, BytesRejection>,
    max: usize,
) -> Result<Bytes, ApiErr> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiErr(ApiError::payload_too_large(max))
        } else {
            ApiErr(ApiError::new(Code::InvalidBody, r.body_text()))
        }
    })
}

/// A team id as it may appear in a hook URL: 1..=128 visible ASCII characters.
fn plausible_team(team: &str) -> bool {
    !team.is_empty() && team.len() <= 128 && team.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// What became of a hook request's events, counted by outcome for `kite_ingest_total`
/// (carried in the response's extensions from the handler to [`receive`]; one event unless
/// it was a batch).
#[derive(Debug, Clone)]
struct IngestTally(Vec<(&'static str, u64)>);

/// What `POST /hooks/{team}/{source}` answers for an event it took.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HookAnswer {
    /// `accepted` (stored), `duplicate_ignored` (held already) or `loop_ignored` (it came
    /// back to where it started).
    status: HookStatus,
    /// The CloudEvent id.
    id: String,
    /// Its sequence number on this instance (`accepted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<i64>,
    /// When it was stored (`accepted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<chrono::DateTime<Utc>>,
}

/// A structured CloudEvent as a peer sends it (the OpenAPI schema of the hook's
/// `application/cloudevents+json` body): its required attributes, and any others.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct CloudEvent {
    /// `1.0`.
    specversion: String,
    /// The event's id (with `source`, its identity).
    id: String,
    /// Where it happened (`/hooks/{team}/{source}` where it entered the federation).
    source: String,
    /// Its type (`com.stripe.payment_intent.succeeded`).
    #[serde(rename = "type")]
    ty: String,
}

/// A batch of a peer's events (the OpenAPI schema of the hook's
/// `application/cloudevents-batch+json` body): a JSON array of structured CloudEvents. The
/// array is wrapped in `allOf`, the same schema in JSON Schema, so that a client generator
/// types it as one named model: openapi-python-client cannot tell a list apart from the
/// hook's other bodies.
pub(crate) struct CloudEventBatch;

impl utoipa::PartialSchema for CloudEventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ArrayBuilder};
        AllOfBuilder::new()
            .item(
                ArrayBuilder::new().items(utoipa::openapi::Ref::from_schema_name(
                    <CloudEvent as utoipa::ToSchema>::name(),
                )),
            )
            .description(Some(
                "A JSON array of structured CloudEvents, signed once as a whole",
            ))
            .into()
    }
}

impl utoipa::ToSchema for CloudEventBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            <CloudEvent as utoipa::ToSchema>::name().into(),
            <CloudEvent as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// Any other body (bytes), kept as the event's `data_base64` (the OpenAPI schema of the
/// hook's `application/octet-stream` body).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub(crate) struct RawBody(Vec<u8>);

/// What a 200 from `POST /hooks/{team}/{source}` holds: one event's answer, or a batch's.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum HookOk {
    /// One event held already, or a loop.
    One(HookAnswer),
    /// A batch: one result per event.
    Batch(batch::BatchAnswer),
}

/// `POST /hooks/{team}/{source}`, counted and timed.
#[utoipa::path(post, path = "/hooks/{team}/{source}", tag = "hooks", security(()),
    summary = "Take a webhook: a provider's (its signature checked) or a peer's (source `kite`)",
    description = "The body is kept byte for byte. A provider source checks the provider's \
        signature; source `kite` takes events from peers, authenticated by a federation token, \
        a trusted sender's signature or a handshake peer's `kite1` signature (`X-Kite-Key-Id`, \
        `X-Kite-Server`, `X-Kite-Destination`), its events' origins proven by their \
        signatures. The event is stored before the answer. A 2xx to source `kite` offers \
        batches in `X-Kite-Batch` (the most events one request may carry): a kite peer then \
        sends `application/cloudevents-batch+json`, a JSON array of events signed once, and \
        gets 200 with one result per event.",
    params(("team" = String, Path, description = "The team"),
        ("source" = String, Path, description = "The source's name, or `kite`")),
    request_body(content(
        (Object = "application/json"),
        (CloudEvent = "application/cloudevents+json"),
        (CloudEventBatch = "application/cloudevents-batch+json"),
        (std::collections::HashMap<String, String> = "application/x-www-form-urlencoded"),
        (RawBody = "application/octet-stream")),
        description = "The webhook's payload, as the provider or peer sent it: JSON (kept as \
            its own text); a structured CloudEvent (`application/cloudevents+json`, as peers \
            send); a batch of a peer's events; or any other body (a form post, bytes), kept \
            as the event's `data_base64`"),
    responses(
        (status = 202, description = "Stored", body = HookAnswer),
        (status = 200, description = "Held already, or a loop; or a batch's results",
            body = HookOk)))]
pub(crate) async fn receive(
    State(st): State<Arc<AppState>>,
    ConnectInfo(client): ConnectInfo<std::net::SocketAddr>,
    Path((team, source)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiErr> {
    use kite_wire::metrics as m;
    let started = std::time::Instant::now();
    let mut claim = None;
    let result = take(
        &st,
        client,
        Call {
            team: &team,
            source: &source,
            method: method.as_str(),
            path: uri.path(),
        },
        headers,
        body,
        &mut claim,
    )
    .await;
    // A peer's signed request that was taken is not taken again.
    if let (Ok(_), Some(c)) = (&result, claim) {
        c.keep();
    }
    let tally = match &result {
        Ok(r) => r.extensions().get::<IngestTally>().map_or_else(
            || vec![(HookStatus::Accepted.outcome(), 1)],
            |t| t.0.clone(),
        ),
        Err(_) => vec![(HookStatus::Rejected.outcome(), 1)],
    };
    // Labels only for a team that exists and a source that is configured (or a provider's
    // or federation's own name): junk in a URL never makes a new series.
    let (team, source) = if st.teams.read().await.contains(&team) {
        let source = st.source_label(&team, &source).await.to_string();
        (team, source)
    } else {
        ("-".to_string(), "-".to_string())
    };
    metrics::histogram!(m::INGEST_SECONDS, "source" => source.clone())
        .record(started.elapsed().as_secs_f64());
    for (outcome, n) in tally {
        metrics::counter!(m::INGEST, "team" => team.clone(), "source" => source.clone(), "outcome" => outcome)
            .increment(n);
    }
    result
}

/// Marks a response with the one outcome of its event, for `kite_ingest_total`.
fn with_outcome(mut r: Response, outcome: &'static str) -> Response {
    r.extensions_mut().insert(IngestTally(vec![(outcome, 1)]));
    r
}

/// Where a hook request went.
#[derive(Clone, Copy)]
struct Call<'a> {
    team: &'a str,
    source: &'a str,
    method: &'a str,
    path: &'a str,
}

/// Takes a hook request: checks its body, source name and team, authenticates its sender,
/// and takes its batch, its Slack challenge or its one event.
async fn take(
    st: &AppState,
    client: std::net::SocketAddr,
    call: Call<'_>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    claim: &mut Option<ReplayClaim>,
) -> Result<Response, ApiErr> {
    let (team, source) = (call.team, call.source);
    let body = body_or_413(body, MAX_BODY_BYTES)?;
    validate_source_name(source)?;
    if !plausible_team(team) || !st.team_known(team).await? {
        return Err(anonymous(
            st,
            client,
            ApiErr(ApiError::new(
                Code::TeamNotFound,
                format!("no team {team:?}"),
            )),
        ));
    }
    let now = Utc::now().timestamp();
    let snapshot = st.senders.get().await?;
    let intake = Intake {
        st,
        client,
        call,
        headers: &headers,
        body: &body,
        now,
        snapshot: &snapshot,
    };
    let (scheme, from) = if source == FEDERATION_SOURCE {
        let fed = intake.federated_sender(claim).await?;
        if batch::is_batch(&headers) {
            // Authenticated once over the whole body; each event charged to the sender.
            let items = batch::split(&body, st.batch_max())?;
            st.sender_limit.check_n(&fed.limit_key, items.len())?;
            return Ok(take_batch(st, team, &fed.who, &fed.peers, &items).await);
        }
        st.sender_limit.check(&fed.limit_key)?;
        (None, Some((fed.who, fed.peers)))
    } else {
        (intake.hook_scheme().await?, None)
    };
    if let Some(r) = slack_handshake(scheme, source, &body) {
        return Ok(r);
    }
    intake.take_one(scheme, from).await
}

/// A refusal before the request proved who sent it: charged to its client address' bucket,
/// so junk naming a team or a sender never spends their rate.
fn anonymous(st: &AppState, client: std::net::SocketAddr, e: ApiErr) -> ApiErr {
    match st.anon_limit.check(&client.ip().to_string()) {
        Ok(()) => e,
        Err(limited) => limited,
    }
}

/// A hook request to a known team, its body read: what its sender is checked against.
struct Intake<'a> {
    st: &'a AppState,
    client: std::net::SocketAddr,
    call: Call<'a>,
    headers: &'a HeaderMap,
    body: &'a [u8],
    /// When it arrived (Unix seconds), for signature freshness.
    now: i64,
    snapshot: &'a SenderSnapshot,
}

impl Intake<'_> {
    /// A refusal of this request before it proved who sent it (see [`anonymous`]).
    fn anonymous(&self, e: ApiErr) -> ApiErr {
        anonymous(self.st, self.client, e)
    }

    /// Takes one event (a hook's, or a peer's outside a batch) and answers what became of
    /// it; a federated answer offers batches.
    async fn take_one(
        &self,
        scheme: Option<Scheme>,
        from: Option<(Sender, Arc<PeerSnapshot>)>,
    ) -> Result<Response, ApiErr> {
        let st = self.st;
        let hook = Hook {
            team: self.call.team,
            source: self.call.source,
            scheme,
            instance_id: &st.cfg.instance_id,
        };
        let from = from.as_ref().map(|(who, peers)| (who, peers.as_ref()));
        let (id, admitted) = take_event(st, hook, self.headers, self.body, from).await?;
        if scheme.is_none() && from.is_none() && matches!(admitted, Admitted::Stored { .. }) {
            // An unsigned hook took an event: the sources listing marks it.
            st.note_unsigned(self.call.team, self.call.source);
        }
        let (status, answer) = answer_of(id, admitted);
        let outcome = answer.status.outcome();
        let mut r = if status == StatusCode::ACCEPTED {
            (status, Json(answer)).into_response()
        } else {
            (status, Json(HookOk::One(answer))).into_response()
        };
        if self.call.source == FEDERATION_SOURCE {
            offer_batches(st, &mut r);
        }
        Ok(with_outcome(r, outcome))
    }
}

/// Slack checks an Events API URL with a signed `url_verification` request, answered with
/// its challenge; it is a handshake, not an event. The answer, if this request is one.
fn slack_handshake(scheme: Option<Scheme>, source: &str, body: &[u8]) -> Option<Response> {
    let slack = scheme == Some(Scheme::Slack) || (scheme.is_none() && source == "slack");
    if !slack {
        return None;
    }
    let challenge = slack_challenge(body)?;
    Some(with_outcome(
        (
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            challenge,
        )
            .into_response(),
        "challenge",
    ))
}

/// What a single POST answers for an event taken: its status and its body (whose status
/// names its outcome for `kite_ingest_total`).
fn answer_of(id: String, admitted: Admitted) -> (StatusCode, HookAnswer) {
    let (status, answer, seq, created_at) = match admitted {
        Admitted::Stored { seq, received_at } => (
            StatusCode::ACCEPTED,
            HookStatus::Accepted,
            Some(seq.0),
            Some(received_at),
        ),
        Admitted::Duplicate => (StatusCode::OK, HookStatus::DuplicateIgnored, None, None),
        Admitted::Loop => (StatusCode::OK, HookStatus::LoopIgnored, None, None),
    };
    let body = HookAnswer {
        status: answer,
        id,
        seq,
        created_at,
    };
    (status, body)
}

/// Maps, checks (a peer's grants, its provenance) and stores one event; answers its id and
/// what became of it. `from` is the sender of a federated event and the peers it was
/// checked against.
async fn take_event(
    st: &AppState,
    hook: Hook<'_>,
    headers: &HeaderMap,
    body: &[u8],
    from: Option<(&Sender, &kite_store::cache::PeerSnapshot)>,
) -> Result<(String, Admitted), ApiErr> {
    use tracing::Instrument as _;
    let mut incoming = build_event(hook, headers, body, Utc::now())?;
    // The ingest span (only while spans are exported): a child of the context the event
    // came with; the event keeps the span's context, which its deliveries continue.
    let span = if otel::enabled() {
        tracing::info_span!(
            target: otel::TARGET,
            "kite.ingest",
            otel.kind = "server",
            cloudevents.event_id = %incoming.id,
            cloudevents.event_type = %incoming.ty,
            cloudevents.event_source = %incoming.source,
            kite.team = hook.team,
            kite.hook = hook.source,
            kite.seq = tracing::field::Empty,
            kite.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    };
    incoming.trace = Some(otel::continue_in(&span, incoming.trace.as_ref()));
    let taken = check_and_admit(st, hook, body, from, incoming)
        .instrument(span.clone())
        .await;
    if !span.is_disabled() {
        match &taken {
            Ok((_, admitted)) => {
                let (_, answer) = answer_of(String::new(), admitted.clone());
                span.record("kite.outcome", answer.status.outcome());
                if let Some(seq) = answer.seq {
                    span.record("kite.seq", seq);
                }
            }
            Err(e) => {
                span.record("kite.outcome", HookStatus::Rejected.outcome());
                span.record("otel.status_code", "ERROR");
                span.record("otel.status_description", e.0.message.as_str());
            }
        }
    }
    taken
}

/// The checks of an event taken from a hook (a peer's grants, its provenance) and its store.
async fn check_and_admit(
    st: &AppState,
    hook: Hook<'_>,
    body: &[u8],
    from: Option<(&Sender, &kite_store::cache::PeerSnapshot)>,
    incoming: kite_wire::event::IncomingEvent,
) -> Result<(String, Admitted), ApiErr> {
    let id = incoming.id.clone();
    let event = match from {
        None => Admissible::Hook(incoming),
        Some((from, peers)) => {
            st.fed
                .check_send(hook.team, peers, from, &incoming.ty)
                .await?;
            match from {
                Sender::Peer(p) => Admissible::Peer(
                    st.fed
                        .verify_event(hook.team, peers, p, incoming, body)
                        .await?,
                ),
                Sender::Token(_) => {
                    if incoming.origin_sig.is_some() {
                        let origin = incoming.fed.origin.as_deref();
                        verify_origin(st, hook.team, peers, body, origin).await?;
                    }
                    Admissible::Token(incoming)
                }
            }
        }
    };
    let admitted = admit(st, hook.team.to_string(), hook.source.to_string(), event).await?;
    Ok((id, admitted))
}

/// Takes the events of an authenticated batch, each on its own and all at once (their
/// stores share the ingest writer's commits); answers 200 with one result per event.
async fn take_batch(
    st: &AppState,
    team: &str,
    from: &Sender,
    peers: &kite_store::cache::PeerSnapshot,
    items: &[&serde_json::value::RawValue],
) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/cloudevents+json"),
    );
    let hook = Hook {
        team,
        source: FEDERATION_SOURCE,
        scheme: None,
        instance_id: &st.cfg.instance_id,
    };
    let taken = futures::future::join_all(items.iter().map(|raw| {
        take_event(
            st,
            hook,
            &headers,
            raw.get().as_bytes(),
            Some((from, peers)),
        )
    }))
    .await;
    let mut tally: Vec<(&'static str, u64)> = Vec::new();
    let results = taken
        .into_iter()
        .map(|t| {
            let (outcome, result) = match t {
                Ok((id, admitted)) => {
                    let (_, a) = answer_of(id, admitted);
                    let outcome = a.status.outcome();
                    let result = batch::ItemResult {
                        status: a.status,
                        id: Some(a.id),
                        seq: a.seq,
                        created_at: a.created_at,
                        http_status: None,
                        error: None,
                    };
                    (outcome, result)
                }
                Err(e) => (
                    HookStatus::Rejected.outcome(),
                    batch::ItemResult::rejected(None, &e.0),
                ),
            };
            match tally.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => tally.push((outcome, 1)),
            }
            result
        })
        .collect();
    let mut r = Json(HookOk::Batch(batch::BatchAnswer { results })).into_response();
    offer_batches(st, &mut r);
    r.extensions_mut().insert(IngestTally(tally));
    r
}

/// Offers batches on a federated event's answer: the sender may send up to this many
/// events in one request from now on.
fn offer_batches(st: &AppState, r: &mut Response) {
    r.headers_mut().insert(
        batch::OFFER_HEADER,
        axum::http::HeaderValue::from(st.batch_max()),
    );
}

/// Checks the origin signature a Kite token sender's event carries.
async fn verify_origin(
    st: &AppState,
    team: &str,
    peers: &kite_store::cache::PeerSnapshot,
    body: &[u8],
    origin: Option<&str>,
) -> Result<(), ApiErr> {
    let event: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
        .map_err(|e| ApiErr(ApiError::new(Code::InvalidCloudevent, e.to_string())))?;
    st.fed
        .verify_origin(team, peers, &event, origin)
        .await
        .map_err(ApiErr::from)
}

/// An event ready to store, by who it came from: only a peer's event whose provenance was
/// proven ([`VerifiedEvent`]) is taken from a handshake peer.
pub(crate) enum Admissible {
    /// A provider's webhook (or a CloudEvent posted to a hook other than `kite`).
    Hook(kite_wire::event::IncomingEvent),
    /// A federated event from a Kite token sender (which cannot sign).
    Token(kite_wire::event::IncomingEvent),
    /// A federated event from a handshake peer, its origin proven.
    Peer(VerifiedEvent),
}

/// What became of an event handed to [`admit`].
#[derive(Clone)]
pub(crate) enum Admitted {
    /// Stored, with its sequence number.
    Stored {
        seq: EventSeq,
        received_at: chrono::DateTime<Utc>,
    },
    /// Its identity was stored already.
    Duplicate,
    /// It passed here before (this instance is in its chain): not stored.
    Loop,
}

/// Stores an event (committed before this answers), unless it already passed here.
pub(crate) async fn admit(
    st: &AppState,
    team: String,
    source: String,
    event: Admissible,
) -> Result<Admitted, ApiErr> {
    let incoming = match event {
        Admissible::Hook(e) | Admissible::Token(e) => e,
        Admissible::Peer(v) => v.into_event(),
    };
    if source == FEDERATION_SOURCE && incoming.fed.visited(&st.cfg.instance_id) {
        tracing::debug!(id = %incoming.id, "dropping federated event that already passed here");
        return Ok(Admitted::Loop);
    }
    let outcome = st
        .ingest
        .submit(NewEvent {
            team_id: team.into(),
            ce_source: incoming.source,
            ce_id: incoming.id,
            hook_source: source,
            ce_type: incoming.ty,
            event: incoming.text,
            fed: incoming.fed,
            origin_sig: incoming.origin_sig,
            trace: incoming.trace,
        })
        .await?;
    Ok(match outcome {
        InsertOutcome::Inserted { seq, received_at } => Admitted::Stored { seq, received_at },
        InsertOutcome::Duplicate => Admitted::Duplicate,
    })
}

/// The challenge of a Slack `url_verification` request (`{"type":"url_verification",
/// "challenge":"..."}`), if that is what the body is.
fn slack_challenge(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Verification {
        #[serde(rename = "type")]
        ty: String,
        challenge: String,
    }
    let v: Verification = serde_json::from_slice(body).ok()?;
    (v.ty == "url_verification").then_some(v.challenge)
}
