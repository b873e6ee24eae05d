//! Provider webhook signatures checked at ingress: Stripe, GitHub, Slack, Standard Webhooks
//! and a plain HMAC-SHA256 header. Every comparison is constant-time.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Default clock tolerance for timestamped schemes, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// A signature scheme a source can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `Stripe-Signature: t=<unix>,v1=<hex>`, HMAC over `{t}.{body}`.
    Stripe,
    /// `X-Hub-Signature-256: sha256=<hex>`, HMAC over the body.
    Github,
    /// `X-Slack-Signature: v0=<hex>` over `v0:{X-Slack-Request-Timestamp}:{body}`.
    Slack,
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>` over `{id}.{ts}.{body}`.
    StandardWebhooks,
    /// A configurable header holding `<hex>` or `sha256=<hex>` of HMAC over the body.
    HmacSha256,
}

impl Scheme {
    /// Parses the scheme's API name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stripe" => Self::Stripe,
            "github" => Self::Github,
            "slack" => Self::Slack,
            "standard-webhooks" => Self::StandardWebhooks,
            "hmac-sha256" => Self::HmacSha256,
            _ => return None,
        })
    }

    /// The scheme's API name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Github => "github",
            Self::Slack => "slack",
            Self::StandardWebhooks => "standard-webhooks",
            Self::HmacSha256 => "hmac-sha256",
        }
    }

    /// Every scheme.
    pub const ALL: &'static [Scheme] = &[
        Self::Stripe,
        Self::Github,
        Self::Slack,
        Self::StandardWebhooks,
        Self::HmacSha256,
    ];

    /// Every scheme's API name.
    pub const NAMES: &'static [&'static str] = &[
        "stripe",
        "github",
        "slack",
        "standard-webhooks",
        "hmac-sha256",
    ];
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Scheme {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Scheme {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Scheme::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "scheme must be one of {}",
                Scheme::NAMES.join(", ")
            ))
        })
    }
}

impl utoipa::PartialSchema for Scheme {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(Scheme::NAMES.iter().copied()))
            .into()
    }
}

impl utoipa::ToSchema for Scheme {}

/// A scheme is stored as its API name.
#[cfg(feature = "postgres")]
mod sql {
    use super::Scheme;
    use postgres_types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

    impl ToSql for Scheme {
        fn to_sql(
            &self,
            ty: &Type,
            out: &mut postgres_types::private::BytesMut,
        ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
            self.name().to_sql(ty, out)
        }

        fn accepts(ty: &Type) -> bool {
            <&str as ToSql>::accepts(ty)
        }

        to_sql_checked!();
    }

    impl<'a> FromSql<'a> for Scheme {
        fn from_sql(
            ty: &Type,
            raw: &'a [u8],
        ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            let s = <&str as FromSql>::from_sql(ty, raw)?;
            Scheme::parse(s).ok_or_else(|| format!("unknown scheme {s:?}").into())
        }

        fn accepts(ty: &Type) -> bool {
            <&str as FromSql>::accepts(ty)
        }
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No signature, or a malformed one, or none that matches.
    #[error("signature missing or invalid")]
    Invalid,
    /// The signed timestamp is outside the tolerance.
    #[error("signature timestamp outside the tolerance")]
    Stale,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// HMAC-SHA256 of the concatenated parts.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn matches(key: &[u8], parts: &[&[u8]], sig: &[u8]) -> bool {
    let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        m.update(p);
    }
    m.verify_slice(sig).is_ok()
}

fn fresh(ts: i64, now: i64, tolerance: i64) -> Result<(), SigError> {
    if now.abs_diff(ts) > tolerance.unsigned_abs() {
        Err(SigError::Stale)
    } else {
        Ok(())
    }
}

/// The key bytes of a Standard Webhooks secret, as the official libraries read it: without
/// its `whsec_` prefix, base64-decoded (a bare base64 secret too). A secret that is not
/// base64 (`kfed_...` tokens minted before) is used as it is.
pub fn standard_key(secret: &str) -> Vec<u8> {
    use base64::engine::{general_purpose::GeneralPurpose, DecodePaddingMode};
    // Padding optional, as Python's decoder (the libraries append `==`) accepts.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    match LENIENT.decode(b64) {
        Ok(key) if !key.is_empty() => key,
        _ => secret.as_bytes().to_vec(),
    }
}

/// The signatures of a `webhook-signature` header (`v1,<base64>` items separated by spaces).
pub fn parse_webhook_signatures(header: &str) -> Vec<Vec<u8>> {
    header
        .split_whitespace()
        .filter_map(|item| item.strip_prefix("v1,"))
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .collect()
}

/// A `webhook-signature` value signing `{id}.{timestamp}.{body}` with each secret.
pub fn sign_standard(secrets: &[&str], id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    secrets
        .iter()
        .map(|s| {
            let mac = hmac(
                &standard_key(s),
                &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
            );
            format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(mac)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The most `webhook-signature` entries checked (a sender in rotation sends two or three).
pub const MAX_SIGNATURES: usize = 8;

/// Checks Standard Webhooks headers against any of `secrets`.
pub fn verify_standard(
    secrets: &[&str],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
    tolerance: i64,
) -> Result<(), SigError> {
    let id = header(headers, "webhook-id").ok_or(SigError::Invalid)?;
    let ts_raw = header(headers, "webhook-timestamp").ok_or(SigError::Invalid)?;
    let ts: i64 = ts_raw.parse().map_err(|_| SigError::Invalid)?;
    let sigs =
        parse_webhook_signatures(header(headers, "webhook-signature").ok_or(SigError::Invalid)?);
    // One MAC a secret, compared with every signature in constant time; at most
    // MAX_SIGNATURES are looked at, so what a caller sends bounds nothing but itself.
    let ok = secrets.iter().any(|s| {
        let mac = hmac(
            &standard_key(s),
            &[id.as_bytes(), b".", ts_raw.as_bytes(), b".", body],
        );
        sigs.iter().take(MAX_SIGNATURES).fold(false, |hit, sig| {
            hit | bool::from(mac.as_slice().ct_eq(sig))
        })
    });
    if !ok {
        return Err(SigError::Invalid);
    }
    fresh(ts, now, tolerance)
}

/// A parsed `Stripe-Signature` header: its timestamp and `v1` signatures.
pub fn parse_stripe_header(v: &str) -> Option<(i64, Vec<Vec<u8>>)> {
    let mut ts = None;
    let mut sigs = Vec::new();
    for part in v.split(',') {
        let (k, val) = part.trim().split_once('=')?;
        match k {
            "t" => ts = Some(val.parse::<i64>().ok()?),
            "v1" => sigs.extend(hex::decode(val).ok()),
            _ => {}
        }
    }
    Some((ts?, sigs))
}

fn hex_sig(v: &str, prefix: &str) -> Option<Vec<u8>> {
    hex::decode(v.strip_prefix(prefix).unwrap_or(v)).ok()
}

/// Headers a provider's signature travels in (dropped when a body is signed anew).
pub const SIGNATURE_HEADERS: &[&str] = &[
    "stripe-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// The headers that sign `body` the way `scheme`'s provider does, with `secret` (its bytes
/// as they are, as the providers' libraries take them): what a local app behind
/// `kite listen --forward-to --raw` verifies with its provider's official library. Schemes
/// without a provider of their own get none.
pub fn sign_as(
    scheme: Scheme,
    secret: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let key = secret.as_bytes();
    let t = timestamp.to_string();
    match scheme {
        Scheme::Stripe => {
            let mac = hmac(key, &[t.as_bytes(), b".", body]);
            vec![("stripe-signature", format!("t={t},v1={}", hex::encode(mac)))]
        }
        Scheme::Github => {
            let mac = hmac(key, &[body]);
            vec![(
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(mac)),
            )]
        }
        Scheme::Slack => {
            let mac = hmac(key, &[b"v0:", t.as_bytes(), b":", body]);
            vec![
                ("x-slack-request-timestamp", t),
                ("x-slack-signature", format!("v0={}", hex::encode(mac))),
            ]
        }
        Scheme::StandardWebhooks | Scheme::HmacSha256 => Vec::new(),
    }
}

/// Verifies a provider webhook with any of `secrets` (current first, then ones still valid
/// after a rotation). `header_name` is the header of [`Scheme::HmacSha256`].
pub fn verify(
    scheme: Scheme,
    secrets: &[&str],
    header_name: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SigError> {
    let tol = DEFAULT_TOLERANCE_SECS;
    match scheme {
        Scheme::Stripe => {
            let (ts, sigs) = header(headers, "stripe-signature")
                .and_then(parse_stripe_header)
                .ok_or(SigError::Invalid)?;
            let t = ts.to_string();
            let ok = secrets.iter().any(|s| {
                sigs.iter()
                    .any(|sig| matches(s.as_bytes(), &[t.as_bytes(), b".", body], sig))
            });
            if !ok {
                return Err(SigError::Invalid);
            }
            fresh(ts, now, tol)
        }
        Scheme::Github => {
            let sig = header(headers, "x-hub-signature-256")
                .and_then(|v| v.strip_prefix("sha256="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or(SigError::Invalid)?;
            if secrets.iter().any(|s| matches(s.as_bytes(), &[body], &sig)) {
                Ok(())
            } else {
                Err(SigError::Invalid)
            }
        }
        Scheme::Slack => {
            let ts_raw = header(headers, "x-slack-request-timestamp").ok_or(SigError::Invalid)?;
            let ts: i64 = ts_raw.parse().map_err(|_| SigError::Invalid)?;
            let sig = header(headers, "x-slack-signature")
                .and_then(|v| v.strip_prefix("v0="))
                .and_then(|h| hex::decode(h).ok())
                .ok_or(SigError::Invalid)?;
            let ok = secrets
                .iter()
                .any(|s| matches(s.as_bytes(), &[b"v0:", ts_raw.as_bytes(), b":", body], &sig));
            if !ok {
                return Err(SigError::Invalid);
            }
            fresh(ts, now, tol)
        }
        Scheme::StandardWebhooks => verify_standard(secrets, headers, body, now, tol),
        Scheme::HmacSha256 => {
            let name = header_name.unwrap_or("x-signature");
            let sig = header(headers, name)
                .and_then(|v| hex_sig(v, "sha256="))
                .ok_or(SigError::Invalid)?;
            if secrets.iter().any(|s| matches(s.as_bytes(), &[body], &sig)) {
                Ok(())
            } else {
                Err(SigError::Invalid)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    // Vectors from each provider's public documentation.
    #[test]
    fn every_scheme_is_listed_once_by_its_name() {
        let names: Vec<&str> = Scheme::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names, Scheme::NAMES);
        assert!(Scheme::ALL
            .iter()
            .all(|s| Scheme::parse(s.name()) == Some(*s)));
    }

    #[test]
    fn github_documented_vector() {
        let headers = h(&[(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        )]);
        let secret = "It's a Secret to Everybody";
        assert!(verify(
            Scheme::Github,
            &[secret],
            None,
            &headers,
            b"Hello, World!",
            0
        )
        .is_ok());
        assert_eq!(
            verify(
                Scheme::Github,
                &["other"],
                None,
                &headers,
                b"Hello, World!",
                0
            ),
            Err(SigError::Invalid)
        );
    }

    #[test]
    fn slack_documented_vector() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let headers = h(&[
            ("x-slack-request-timestamp", "1531420618"),
            (
                "x-slack-signature",
                "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
        ]);
        let secret = "8f742231b10e8888abcd99yyyzzz85a5";
        assert!(verify(
            Scheme::Slack,
            &[secret],
            None,
            &headers,
            body,
            1531420618 + 10
        )
        .is_ok());
        assert_eq!(
            verify(
                Scheme::Slack,
                &[secret],
                None,
                &headers,
                body,
                1531420618 + 301
            ),
            Err(SigError::Stale)
        );
    }

    #[test]
    fn standard_webhooks_documented_vector() {
        let headers = h(&[
            ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
            ("webhook-timestamp", "1614265330"),
            (
                "webhook-signature",
                "v1,bm9ldHUjKzFob2VudXRob2VodWUzMjRvdWVvdW9ldQo= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            ),
        ]);
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert!(verify(
            Scheme::StandardWebhooks,
            &[secret],
            None,
            &headers,
            body,
            1614265330
        )
        .is_ok());
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &[secret],
                None,
                &headers,
                body,
                1614265330 + 600
            ),
            Err(SigError::Stale)
        );
        assert_eq!(
            sign_standard(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn stripe_scheme_with_rotation_and_tolerance() {
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000i64;
        let sig = hex::encode(hmac(b"whsec_new", &[t.to_string().as_bytes(), b".", body]));
        let headers = h(&[("stripe-signature", &format!("t={t},v1={sig},v0=ignored"))]);
        assert!(verify(
            Scheme::Stripe,
            &["whsec_old", "whsec_new"],
            None,
            &headers,
            body,
            t
        )
        .is_ok());
        assert_eq!(
            verify(Scheme::Stripe, &["whsec_old"], None, &headers, body, t),
            Err(SigError::Invalid)
        );
        assert_eq!(
            verify(
                Scheme::Stripe,
                &["whsec_new"],
                None,
                &headers,
                body,
                t + 301
            ),
            Err(SigError::Stale)
        );
        assert!(parse_stripe_header("garbage").is_none());
    }

    #[test]
    fn extreme_timestamps_are_stale_not_a_panic() {
        // Found by the provider_signature fuzz target: `now - ts` overflowed.
        let body = b"{}";
        let t = i64::MIN;
        let sig = hex::encode(hmac(b"k", &[t.to_string().as_bytes(), b".", body]));
        let headers = h(&[("stripe-signature", &format!("t={t},v1={sig}"))]);
        assert_eq!(
            verify(Scheme::Stripe, &["k"], None, &headers, body, 255),
            Err(SigError::Stale)
        );
    }

    #[test]
    fn hmac_header_is_configurable() {
        let body = b"payload";
        let sig = hex::encode(hmac(b"s3cret", &[body]));
        let headers = h(&[("x-acme-signature", &format!("sha256={sig}"))]);
        assert!(verify(
            Scheme::HmacSha256,
            &["s3cret"],
            Some("x-acme-signature"),
            &headers,
            body,
            0
        )
        .is_ok());
        assert!(verify(Scheme::HmacSha256, &["s3cret"], None, &headers, body, 0).is_err());
    }
}
