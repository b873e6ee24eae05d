//! The typed admin API client: one way to call `/api/...` with a team's key (or, for
//! `/api/teams`, the operator key), one method a verb. Each verb sends the request type of
//! `kite_api` and answers its answer type ([`Answered`]), with the JSON text the instance
//! wrote, so a caller can print it as it is or read the fields it needs.

mod specs;
mod trust;
mod verbs;

pub use trust::peer_by_invitation;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The instance URL has no `http://` or `https://` scheme.
    #[error("the instance URL {url:?} needs an http:// or https:// scheme")]
    NoScheme {
        /// The URL as given.
        url: String,
    },
    /// The instance URL has a path, query or fragment: it must be the instance's root.
    #[error("the instance URL {url:?} is not the instance's root: use {root}")]
    NotRoot {
        /// The URL as given.
        url: String,
        /// The root it names.
        root: String,
    },
    /// The instance URL does not parse.
    #[error("the instance URL {url:?} is not a URL: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// The instance could not be reached.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The instance answered with another status than the call expects.
    #[error("{method} {url} answered {status}: {code}: {message}")]
    Status {
        /// The method.
        method: Method,
        /// The URL called.
        url: String,
        /// The status.
        status: u16,
        /// The error code of the answer (`error` when it had none).
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer is not the type the API documents for the call.
    #[error("{url} answered what its contract does not describe: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why it could not be read.
        reason: String,
    },
}

impl ClientError {
    fn decode(url: String, e: serde_json::Error) -> Self {
        ClientError::Decode {
            url,
            reason: e.to_string(),
        }
    }

    /// The HTTP status the instance answered, when it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An answer: its status and JSON body (`null` when the body was not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// The body as the instance wrote it.
    pub text: String,
}

/// A typed answer: the `kite_api` answer type as read ([`Answered::value`], also reached
/// through `Deref`) and the JSON text the instance wrote ([`Answered::text`]).
#[derive(Debug, Clone)]
pub struct Answered<T> {
    /// The answer, read as its type.
    pub value: T,
    /// The JSON text as written.
    pub text: String,
}

impl<T> std::ops::Deref for Answered<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// Checks that `url` is an instance's root URL (`http(s)://host[:port]`, at most a trailing
/// `/`) and answers it without the trailing slash.
pub fn instance_root(url: &str) -> Result<String, ClientError> {
    let lower = url.trim().to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(ClientError::NoScheme {
            url: url.to_string(),
        });
    }
    let parsed = Url::parse(url.trim()).map_err(|e| ClientError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::BadUrl {
            url: url.to_string(),
            reason: "it names no host".to_string(),
        });
    }
    let root = parsed.origin().ascii_serialization();
    if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ClientError::NotRoot {
            url: url.to_string(),
            root,
        });
    }
    Ok(root)
}

/// A client for one instance's admin API with one API key.
#[derive(Debug, Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ApiClient {
    /// A client for the instance at `base` (its root URL) with `key`.
    pub fn new(base: &str, key: &str) -> Self {
        Self::with_http(reqwest::Client::new(), base, key)
    }

    /// The same, over an HTTP client of the caller's.
    pub fn with_http(http: reqwest::Client, base: &str, key: &str) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            key: key.to_string(),
        }
    }

    /// A client for an instance URL a person typed: refused unless it is an http(s) root URL
    /// (see [`instance_root`]).
    pub fn for_instance(url: &str, key: &str) -> Result<Self, ClientError> {
        Ok(Self::new(&instance_root(url)?, key))
    }

    /// The instance's root URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call: any status is an [`Answer`]; only an unreachable instance is an error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ClientError> {
        let (status, text) = self.exchange(method, path, body, None::<&()>).await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body, text })
    }

    /// One call with a typed body that must answer a 2xx; answers it as `T`.
    pub async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answered<T>, ClientError> {
        self.answered(method, path, body, None::<&()>).await
    }

    /// One call without a body that must answer a 2xx; answers it as `T`.
    pub async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<Answered<T>, ClientError> {
        self.answered(method, path, None::<&()>, None::<&()>).await
    }

    /// A `GET` with a typed query string that must answer a 2xx; answers it as `T`.
    pub async fn query<Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Q,
    ) -> Result<Answered<T>, ClientError> {
        self.answered(Method::GET, path, None::<&()>, Some(query))
            .await
    }

    /// A call that must answer a 2xx, its text read once as `T`.
    async fn answered<B: Serialize + ?Sized, Q: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<Answered<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let (status, text) = self.exchange(method.clone(), path, body, query).await?;
        if !(200..300).contains(&status) {
            let e: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let field = |k: &str| e["error"][k].as_str().map(str::to_owned);
            return Err(ClientError::Status {
                method,
                url,
                status,
                code: field("code").unwrap_or_else(|| "error".to_owned()),
                message: field("message").unwrap_or_default(),
            });
        }
        let value = serde_json::from_str(&text).map_err(|e| ClientError::decode(url, e))?;
        Ok(Answered { value, text })
    }

    /// Sends one request; answers its status and body text.
    async fn exchange<B: Serialize + ?Sized, Q: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        query: Option<&Q>,
    ) -> Result<(u16, String), ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(q) = query {
            req = req.query(q);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable { url, source })?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await.unwrap_or_default()))
    }
}

/// Peers `from` to `to` for `team`: a token minted on `to`, trusted there as `from_name`,
/// and a peer `to_name` on `from` that uses it. Answers the peer id on `from` and the token.
pub async fn peer(
    from: &ApiClient,
    from_name: &str,
    to: &ApiClient,
    to_name: &str,
    team: &str,
    scopes: &[&str],
    max_hops: u32,
) -> Result<(String, String), ClientError> {
    let token = to.mint_token(&format!("from {from_name}")).await?;
    to.trust_sender(from_name, &token).await?;
    let url = format!("{}/hooks/{team}/kite", to.base());
    let id = from
        .create_peer(to_name, &url, &token, scopes, max_hops)
        .await?;
    Ok((id, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_urls_must_be_http_roots() {
        assert_eq!(
            instance_root("http://127.0.0.1:7700/").ok().as_deref(),
            Some("http://127.0.0.1:7700")
        );
        assert_eq!(
            instance_root("HTTPS://Kite.Example").ok().as_deref(),
            Some("https://kite.example")
        );
        assert!(matches!(
            instance_root("127.0.0.1:7700"),
            Err(ClientError::NoScheme { .. })
        ));
        assert!(matches!(
            instance_root("localhost:7700"),
            Err(ClientError::NoScheme { .. })
        ));
        assert!(matches!(
            instance_root("ws://127.0.0.1:7700"),
            Err(ClientError::NoScheme { .. })
        ));
        match instance_root("http://127.0.0.1:7700/api") {
            Err(e @ ClientError::NotRoot { .. }) => {
                assert!(e.to_string().contains("use http://127.0.0.1:7700"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            instance_root("http://127.0.0.1:7700?x=1"),
            Err(ClientError::NotRoot { .. })
        ));
        assert!(matches!(
            instance_root("http://:7700"),
            Err(ClientError::BadUrl { .. })
        ));
    }
}
