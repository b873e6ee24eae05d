//! Reading an instance's Prometheus metrics: one scrape, one sample, waiting for a value.

use std::collections::HashMap;
use std::time::Duration;

use super::{eventually, Instance};

const WAIT: Duration = Duration::from_secs(30);

/// One scrape of an instance's `/metrics`.
pub async fn scrape(inst: &Instance) -> String {
    assert!(
        !inst.metrics_url.is_empty(),
        "no metrics URL in the ready line"
    );
    let r = reqwest::get(&inst.metrics_url).await.expect("scrape");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("text/plain"), "{ct}");
    r.text().await.expect("text")
}

/// The value of the sample `name{labels...}` (all `labels` must match) in an exposition.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, v) = l.rsplit_once(' ')?;
        let (n, found) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
            None => (series, HashMap::new()),
        };
        (n == name
            && labels
                .iter()
                .all(|(k, want)| found.get(*k).map(String::as_str) == Some(*want)))
        .then(|| v.parse().ok())
        .flatten()
    })
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    s.split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim().to_string(), v.trim_end_matches('"').to_string()))
        })
        .collect()
}

/// Waits until `name{labels}` reaches `want` on `inst`.
pub async fn reaches(inst: &Instance, name: &str, labels: &[(&str, &str)], want: f64) {
    let what = format!("{name}{labels:?} = {want} on {}", inst.name);
    eventually(&what, WAIT, || async {
        (value(&scrape(inst).await, name, labels) == Some(want)).then_some(())
    })
    .await;
}
