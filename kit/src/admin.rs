//! The typed admin API client: one way to call `/api/...` with a team's key.

use reqwest::Method;
use serde_json::{json, Value};

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
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
}

/// An answer: its status and JSON body (`null` when the body was not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

/// A client for one instance's admin API with one API key.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl AdminClient {
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
    ) -> Result<Answer, AdminError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| AdminError::Unreachable { url, source })?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok(Answer { status, body })
    }

    /// One call that must answer a 2xx; answers its JSON.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, AdminError> {
        let a = self.call(method.clone(), path, body).await?;
        if (200..300).contains(&a.status) {
            return Ok(a.body);
        }
        Err(AdminError::Status {
            method,
            url: format!("{}{path}", self.base),
            status: a.status,
            code: a.body["error"]["code"]
                .as_str()
                .unwrap_or("error")
                .to_string(),
            message: a.body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// Mints a federation token on this instance; answers the secret (shown once).
    pub async fn mint_token(&self, label: &str) -> Result<String, AdminError> {
        let v = self
            .ok(
                Method::POST,
                "/api/federation/tokens",
                Some(&json!({ "label": label })),
            )
            .await?;
        Ok(v["token"].as_str().unwrap_or_default().to_string())
    }

    /// Trusts a sender named `name` holding `token`; answers the sender.
    pub async fn trust_sender(&self, name: &str, token: &str) -> Result<Value, AdminError> {
        self.ok(
            Method::POST,
            "/api/federation/trusted-senders",
            Some(&json!({ "name": name, "inbound_token": token })),
        )
        .await
    }

    /// Creates a peer; answers its id.
    pub async fn create_peer(
        &self,
        name: &str,
        url: &str,
        token: &str,
        scopes: &[&str],
        max_hops: u32,
    ) -> Result<String, AdminError> {
        let v = self
            .ok(
                Method::POST,
                "/api/federation/peers",
                Some(
                    &json!({"name": name, "peer_hook_url": url, "outbound_token": token,
                             "scopes": scopes, "max_hops": max_hops}),
                ),
            )
            .await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }
}

/// Peers `from` to `to` for `team`: a token minted on `to`, trusted there as `from_name`,
/// and a peer `to_name` on `from` that uses it. Answers the peer id on `from` and the token.
pub async fn peer(
    from: &AdminClient,
    from_name: &str,
    to: &AdminClient,
    to_name: &str,
    team: &str,
    scopes: &[&str],
    max_hops: u32,
) -> Result<(String, String), AdminError> {
    let token = to.mint_token(&format!("from {from_name}")).await?;
    to.trust_sender(from_name, &token).await?;
    let url = format!("{}/hooks/{team}/kite", to.base());
    let id = from
        .create_peer(to_name, &url, &token, scopes, max_hops)
        .await?;
    Ok((id, token))
}
