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
            if addrs.iter().any(|a| kite_wire::ssrf::is_forbidden(a.ip())) {
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

/// Idle connections the outbound client keeps to one host: as many as the requests a
/// delivery process sends one peer at once by default, so that none of those is closed
/// only to be opened again.
pub const IDLE_PER_HOST: usize = 256;

/// Builds the process' one outbound HTTP client: timeouts, no redirects, keep-alive pools,
/// certificate verification (plus `peer_ca`), and the SSRF guard unless private peers are
/// allowed. It connects to peers directly: a proxy the environment names (`HTTP_PROXY`
/// and the like) is not used, since the proxy would resolve the peer's host out of the
/// guard's sight.
pub fn http_client(
    timeout: Duration,
    allow_private: bool,
    peer_ca: Option<&std::path::Path>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(IDLE_PER_HOST)
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
    kite_wire::ssrf::Destination::parse(url).is_some_and(|d| d.literal_forbidden())
}

/// An answer longer than what this side reads of it.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// It said or sent more than `max` bytes.
    #[error("the answer is longer than the {max} bytes read of it")]
    TooLarge {
        /// The bound.
        max: usize,
    },
    /// The transfer failed or timed out (the client's timeout covers the whole answer).
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// Reads an answer's body whole, refusing it once it passes `max` bytes (at its
/// `Content-Length`, before reading, or as the bytes arrive). The client's timeout bounds
/// the whole transfer, so a peer trickling an answer is cut off too.
pub async fn read_capped(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<bytes::Bytes, ReadError> {
    if resp
        .content_length()
        .is_some_and(|n| n > u64::try_from(max).unwrap_or(u64::MAX))
    {
        return Err(ReadError::TooLarge { max });
    }
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Err(ReadError::TooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Reads at most `max` bytes of an answer's body and discards the rest unread (the
/// connection is then closed, not reused): what a delivery keeps of a peer's answer.
pub async fn read_prefix(mut resp: reqwest::Response, max: usize) -> bytes::Bytes {
    let mut out = bytes::BytesMut::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out.freeze()
}
