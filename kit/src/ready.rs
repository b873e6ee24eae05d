//! The line `kite serve` prints once it serves:
//! `kite ready url=http://127.0.0.1:PORT instance_id=... roles=...` (without `url=` for a
//! process that does not run the ingress role), and `metrics=http://.../metrics` when it serves
//! its Prometheus metrics.

/// A parsed ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyLine {
    /// The base URL, when the process serves HTTP.
    pub url: Option<String>,
    /// The instance id.
    pub instance_id: Option<String>,
    /// Where its Prometheus metrics are served, when they are.
    pub metrics_url: Option<String>,
}

impl ReadyLine {
    /// The port of [`ReadyLine::url`].
    pub fn port(&self) -> Option<u16> {
        let url = self.url.as_deref()?;
        let authority = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = authority.split('/').next()?;
        authority.rsplit_once(':')?.1.parse().ok()
    }
}

/// Parses a ready line; `None` for any other line.
pub fn parse(line: &str) -> Option<ReadyLine> {
    let rest = line.trim().strip_prefix("kite ready")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    Some(ReadyLine {
        url: field("url=").map(|u| u.trim_end_matches('/').to_owned()),
        instance_id: field("instance_id="),
        metrics_url: field("metrics="),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms() {
        let r = parse("kite ready url=http://127.0.0.1:7701/ instance_id=a roles=ingress").unwrap();
        assert_eq!(r.url.as_deref(), Some("http://127.0.0.1:7701"));
        assert_eq!(
            (r.port(), r.instance_id.as_deref()),
            (Some(7701), Some("a"))
        );
        let r = parse("kite ready instance_id=b roles=router metrics=http://127.0.0.1:9/metrics")
            .unwrap();
        assert_eq!(r.metrics_url.as_deref(), Some("http://127.0.0.1:9/metrics"));
        assert_eq!((r.url.as_deref(), r.port()), (None, None));
        assert!(parse("something else").is_none());
    }
}
