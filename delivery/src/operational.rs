//! The operational worker: turns the triggers' signals into operational events (stored on
//! the team's stream, coalesced: `kite_store::operational`) and delivers them to each team's
//! operational endpoint, signed with Standard Webhooks and retried with the instance's
//! backoff. Its failures never make operational events of their own, and nothing it sends
//! goes to a peer.

use std::sync::Arc;

use chrono::Utc;
use kite_store::operational::{OpsDelivery, OpsSettle};
use tokio_util::sync::CancellationToken;

use crate::Ctx;

/// Operational deliveries sent a pass at most.
const CLAIM: i64 = 32;
/// Operational deliveries of one team in flight at most: a team whose endpoint never
/// answers holds this many sends, not every one.
const PER_TEAM: i64 = 4;
/// Signals taken a pass at most.
const SIGNALS: i64 = 500;

/// Runs until `stop`: every `poll`, emits what the signals say and sends what is due.
pub(crate) async fn run(ctx: Arc<Ctx>, stop: CancellationToken) {
    // Sends run on their own: a slow endpoint holds up neither the emitter nor other teams.
    let mut sending = tokio::task::JoinSet::new();
    // Teams with sends in flight, and how many: none is claimed for again until its sends
    // are done.
    let mut busy: std::collections::HashMap<kite_wire::ids::TeamId, usize> = Default::default();
    // Each send's team, by task, so that a send that failed still frees its team.
    let mut teams_of: std::collections::HashMap<tokio::task::Id, kite_wire::ids::TeamId> =
        Default::default();
    loop {
        while let Some(done) = sending.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            if let Some(team) = teams_of.remove(&id) {
                if let Some(n) = busy.get_mut(&team) {
                    *n -= 1;
                    if *n == 0 {
                        busy.remove(&team);
                    }
                }
            }
        }
        // Mostly nothing is due: one cheap statement says so (an idle instance polls).
        let (emit, due) = match ctx.store.operational_due(ctx.cfg.operational_window).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read operational work");
                (false, false)
            }
        };
        let emitted = if emit {
            ctx.store
                .emit_operational(&ctx.cfg.instance_id, ctx.cfg.operational_window, SIGNALS)
                .await
        } else {
            Ok(Default::default())
        };
        match emitted {
            Ok(done) => {
                use kite_wire::metrics as m;
                for (team, ty) in done.events {
                    metrics::counter!(m::OPERATIONAL_EVENTS, "team" => team, "type" => ty.as_str())
                        .increment(1);
                }
                for team in done.coalesced {
                    metrics::counter!(m::OPERATIONAL_COALESCED, "team" => team).increment(1);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot emit operational events"),
        }
        let lease = ctx.cfg.request_timeout + std::time::Duration::from_secs(10);
        let room = CLAIM - sending.len() as i64;
        if room > 0 && (emit || due) {
            let teams: Vec<String> = busy.keys().map(|t| t.0.clone()).collect();
            match ctx
                .store
                .claim_operational(room, PER_TEAM, &teams, lease)
                .await
            {
                Ok(due) => {
                    for d in due {
                        let ctx = ctx.clone();
                        let team = d.team.clone();
                        *busy.entry(team.clone()).or_default() += 1;
                        let task = sending.spawn(async move { send(&ctx, d).await });
                        teams_of.insert(task.id(), team);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim operational deliveries"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ctx.cfg.operational_poll) => {}
            _ = stop.cancelled() => break,
        }
    }
    // What is in flight stays leased and is sent again once the lease ends.
    sending.shutdown().await;
}

/// Sends one operational event to its endpoint and records the attempt.
async fn send(ctx: &Ctx, d: OpsDelivery) {
    // Like a peer's URL: an address literal of a forbidden class is never dialled (names
    // are checked by the client when they resolve).
    if !ctx.cfg.allow_private_peers && kite_federation::literal_forbidden(&d.url) {
        let error = "forbidden destination: a loopback or private address";
        settle(ctx, &d, None, Some(error.to_string())).await;
        return;
    }
    let message_id = kite_wire::signature::message_id(&d.source, &d.id);
    let ts = Utc::now().timestamp();
    let signature = kite_wire::provider::sign_standard(
        &[d.secret.as_str()],
        &message_id,
        ts,
        d.text.as_bytes(),
    );
    let sent = ctx
        .http
        .post(&d.url)
        .timeout(ctx.cfg.request_timeout)
        .header("content-type", "application/cloudevents+json")
        .header("webhook-id", message_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(d.text.clone())
        .send()
        .await;
    let (status, error) = match sent {
        Ok(r) if r.status().is_success() => (Some(i32::from(r.status().as_u16())), None),
        Ok(r) => (
            Some(i32::from(r.status().as_u16())),
            Some(format!("HTTP {}", r.status().as_u16())),
        ),
        Err(e) => (None, Some(kite_federation::root_cause(&e))),
    };
    settle(ctx, &d, status, error).await;
}

/// Records an attempt: delivered, retried on the instance's backoff, or dead.
async fn settle(ctx: &Ctx, d: &OpsDelivery, status: Option<i32>, error: Option<String>) {
    let failures = u32::try_from(d.attempts).unwrap_or(0) + 1;
    let settle = match &error {
        None => OpsSettle::Delivered,
        Some(_) if failures >= ctx.cfg.retry.max_attempts => OpsSettle::Dead,
        Some(_) => OpsSettle::Retry(
            Utc::now()
                + chrono::Duration::from_std(ctx.cfg.retry.jittered(failures)).unwrap_or_default(),
        ),
    };
    if let Some(e) = &error {
        tracing::info!(team = %d.team, status = ?status, error = %e, "operational endpoint failed");
    }
    if let Err(e) = ctx
        .store
        .settle_operational(d.seq, &settle, status, error.as_deref())
        .await
    {
        tracing::warn!(error = %e, "cannot record an operational delivery");
    }
}
