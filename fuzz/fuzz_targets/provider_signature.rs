//! `provider` signature checks (Stripe `t=..,v1=..`, GitHub, Slack, Standard Webhooks
//! `v1,<b64> v1,<b64>`, plain HMAC-SHA256) on arbitrary headers, secrets and bodies.
//!
//! Three parts per input:
//! - the header parsers (`parse_stripe_header`, `parse_webhook_signatures`, `standard_key`)
//!   on arbitrary text, with a round trip for an accepted Stripe header;
//! - `provider::verify` for every scheme on arbitrary headers (must not panic);
//! - a correctly signed request for one scheme, built the way the provider does it with a
//!   fuzzer-chosen timestamp and clock: it must verify (or be `Stale` exactly when the
//!   timestamp is more than the tolerance away from the clock, computed without overflow),
//!   and a changed body must be refused.
#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use kite_wire::provider::{
    hmac, parse_stripe_header, parse_webhook_signatures, sign_standard, standard_key, verify,
    Scheme, SigError, DEFAULT_TOLERANCE_SECS,
};
use libfuzzer_sys::fuzz_target;

const SCHEMES: [Scheme; 5] = [
    Scheme::Stripe,
    Scheme::Github,
    Scheme::Slack,
    Scheme::StandardWebhooks,
    Scheme::HmacSha256,
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    scheme: u8,
    secrets: Vec<&'a str>,
    signer: u8,
    header_name: &'a str,
    prefixed: bool,
    msg_id: &'a str,
    ts: i64,
    now: u32,
    text: &'a str,
    raw_headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

fn put(h: &mut HeaderMap, name: &'static str, value: &str) {
    h.insert(
        name,
        HeaderValue::from_str(value).expect("ascii header value"),
    );
}

fn parsers(text: &str) {
    if let Some((t, sigs)) = parse_stripe_header(text) {
        let mut rebuilt = format!("t={t}");
        for s in &sigs {
            rebuilt.push_str(",v1=");
            rebuilt.push_str(&hex::encode(s));
        }
        assert_eq!(parse_stripe_header(&rebuilt), Some((t, sigs)));
    }
    let sigs = parse_webhook_signatures(text);
    assert!(sigs.len() <= text.split_whitespace().count());
    let _ = standard_key(text);
}

fn raw(input: &Input<'_>) {
    let mut h = HeaderMap::new();
    for (k, v) in &input.raw_headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v.as_bytes()),
        ) {
            h.append(k, v);
        }
    }
    let name = Some(input.header_name).filter(|n| !n.is_empty());
    for scheme in SCHEMES {
        let _ = verify(
            scheme,
            &input.secrets,
            name,
            &h,
            input.body,
            i64::from(input.now),
        );
    }
}

fn signed(input: &Input<'_>) {
    let scheme = SCHEMES[usize::from(input.scheme) % SCHEMES.len()];
    let secrets: Vec<&str> = if input.secrets.is_empty() {
        vec!["fuzz-secret"]
    } else {
        input.secrets.iter().take(8).copied().collect()
    };
    let signer = secrets[usize::from(input.signer) % secrets.len()];
    let key = signer.as_bytes();
    let (ts, now, body) = (input.ts, i64::from(input.now), input.body);
    let t = ts.to_string();

    let mut h = HeaderMap::new();
    let mut header_name = None;
    let timestamped = match scheme {
        Scheme::Stripe => {
            let sig = hex::encode(hmac(key, &[t.as_bytes(), b".", body]));
            put(&mut h, "stripe-signature", &format!("t={t},v1={sig}"));
            true
        }
        Scheme::Github => {
            let sig = hex::encode(hmac(key, &[body]));
            put(&mut h, "x-hub-signature-256", &format!("sha256={sig}"));
            false
        }
        Scheme::Slack => {
            let sig = hex::encode(hmac(key, &[b"v0:", t.as_bytes(), b":", body]));
            put(&mut h, "x-slack-request-timestamp", &t);
            put(&mut h, "x-slack-signature", &format!("v0={sig}"));
            true
        }
        Scheme::StandardWebhooks => {
            let id = Some(input.msg_id)
                .filter(|id| {
                    !id.is_empty()
                        && id.trim() == *id
                        && id.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                })
                .unwrap_or("msg_fuzz");
            put(&mut h, "webhook-id", id);
            put(&mut h, "webhook-timestamp", &t);
            // Signed with every secret (a rotation); verifying with the signer alone and
            // with the whole list must both work.
            put(
                &mut h,
                "webhook-signature",
                &sign_standard(&secrets, id, ts, body),
            );
            let alone = verify(scheme, &[signer], None, &h, body, now);
            assert_eq!(
                alone,
                expected(true, ts, now),
                "standard webhooks, signer alone"
            );
            true
        }
        Scheme::HmacSha256 => {
            let sig = hex::encode(hmac(key, &[body]));
            let value = if input.prefixed {
                format!("sha256={sig}")
            } else {
                sig
            };
            match HeaderName::from_bytes(input.header_name.as_bytes()) {
                Ok(name) => {
                    h.insert(name, HeaderValue::from_str(&value).expect("hex"));
                    header_name = Some(input.header_name);
                }
                Err(_) => put(&mut h, "x-signature", &value),
            }
            false
        }
    };

    let got = verify(scheme, &secrets, header_name, &h, body, now);
    assert_eq!(
        got,
        expected(timestamped, ts, now),
        "{scheme:?} signed request, ts={ts} now={now}"
    );

    let mut other = body.to_vec();
    other.push(input.signer);
    assert_eq!(
        verify(scheme, &secrets, header_name, &h, &other, now),
        Err(SigError::Invalid),
        "{scheme:?} accepted a changed body"
    );
}

/// The answer for a correctly signed request, with the clock skew computed in i128.
fn expected(timestamped: bool, ts: i64, now: i64) -> Result<(), SigError> {
    if timestamped && (i128::from(now) - i128::from(ts)).abs() > i128::from(DEFAULT_TOLERANCE_SECS)
    {
        Err(SigError::Stale)
    } else {
        Ok(())
    }
}

fuzz_target!(|input: Input<'_>| {
    parsers(input.text);
    raw(&input);
    signed(&input);
});
