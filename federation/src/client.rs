//! The one outbound HTTP client: timeouts, no redirects, keep-alive pools, certificate
//! verification, and the SSRF guard at connect time.

use std::sync::Arc;
use std::time::Duration;

/// Resolves peer host names, refusing forbidden addresses at connect time, so a name that
/// resolved to a public address when the peer was created cannot be rebound to a private one.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            if addrs
                .iter()
                .any(|a| kite_protocol::ssrf::is_forbidden(a.ip()))
            {
                return Err(format!(
                    "forbidden destination: {} resolves to a private address",
                    name.as_str()
                )
                .into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer CA file could not be read or parsed.
    #[error("KITE_PEER_CA: {0}")]
    PeerCa(String),
    /// reqwest refused the configuration.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Builds the process' one outbound HTTP client: timeouts, no redirects, keep-alive pools,
/// certificate verification (plus `peer_ca`), and the SSRF guard unless private peers are
/// allowed.
pub fn http_client(
    timeout: Duration,
    allow_private: bool,
    peer_ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .user_agent(concat!("kite/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    if let Some(path) = peer_ca {
        let pem = std::fs::read(path)
            .map_err(|e| ClientError::PeerCa(format!("{}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| ClientError::PeerCa(format!("{}: {e}", path.display())))?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    Ok(b.build()?)
}

/// True if the URL names a forbidden IP address literal (host names are checked when they
/// are resolved).
pub fn literal_forbidden(url: &str) -> bool {
    kite_protocol::ssrf::Destination::parse(url).is_some_and(|d| d.literal_forbidden())
}
