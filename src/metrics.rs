//! Prometheus metrics (`GET /metrics` on the main listener, or on `KITE_METRICS_ADDR`; the
//! text exposition format):
//! the recorder the roles record into (`metrics-exporter-prometheus`), the process metrics
//! (`metrics-process`), and the gauges sampled from the store (waiting and parked deliveries
//! per peer, the database pool).

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use kite_store::Store;
use kite_wire::metrics::{self as m, Kind};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// How often the sampled gauges are read.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// The process' one recorder (several in-process instances share it).
fn recorder() -> anyhow::Result<&'static PrometheusHandle> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), m::BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    for (name, kind, _, help) in m::ALL {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => {
                metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
            }
        }
    }
    Ok(HANDLE.get_or_init(|| handle))
}

/// Installs the recorder and samples the gauges until `stop`; answers what renders the
/// metrics in the text format (the main listener's `/metrics` serves it).
pub fn start(
    store: Store,
    stop: CancellationToken,
) -> anyhow::Result<std::sync::Arc<dyn Fn() -> String + Send + Sync>> {
    let handle = recorder()?;
    tokio::spawn(sample(handle, store, stop));
    Ok(std::sync::Arc::new(move || handle.render()))
}

/// Serves `/metrics` on a listener of its own (`KITE_METRICS_ADDR`: a process without the
/// ingress role) until `stop`; answers its URL.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
    stop: CancellationToken,
) -> anyhow::Result<String> {
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(url)
}

/// Reads the sampled gauges every [`SAMPLE_EVERY`] until `stop`, and runs the recorder's
/// upkeep: histogram samples are held until it folds them into their buckets, so without it
/// they pile up (about 70 bytes an event) whenever nobody scrapes `/metrics`.
async fn sample(handle: &PrometheusHandle, store: Store, stop: CancellationToken) {
    let process = metrics_process::Collector::new(m::PROCESS_PREFIX);
    process.describe();
    loop {
        handle.run_upkeep();
        process.collect();
        let (in_use, open, max) = store.pool_use();
        metrics::gauge!(m::DB_POOL_IN_USE).set(in_use as f64);
        metrics::gauge!(m::DB_POOL_OPEN).set(open as f64);
        metrics::gauge!(m::DB_POOL_MAX).set(max as f64);
        match store.waiting_deliveries().await {
            Ok(rows) => {
                for (team, peer, pending, parked) in rows {
                    metrics::gauge!(m::PENDING, "team" => team.clone(), "peer" => peer.clone())
                        .set(pending as f64);
                    metrics::gauge!(m::PARKED, "team" => team, "peer" => peer).set(parked as f64);
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot sample waiting deliveries"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
        }
    }
}
