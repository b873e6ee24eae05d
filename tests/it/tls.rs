//! Federation over TLS with a private CA made in the test.

use crate::common;

use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and a server certificate for localhost and 127.0.0.1, written as PEM files.
fn make_pki(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).expect("leaf cert");
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write");
    std::fs::write(&cert_pem, leaf_cert.pem()).expect("write");
    std::fs::write(&key_pem, leaf_key.serialize_pem()).expect("write");
    (ca_pem, cert_pem, key_pem)
}

#[tokio::test]
async fn a_federates_to_b_over_tls_with_a_private_ca() {
    let dir = std::env::temp_dir().join(format!("kite-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, cert, key) = make_pki(&dir);
    let (ca, cert, key) = (
        ca.to_string_lossy().to_string(),
        cert.to_string_lossy().to_string(),
        key.to_string_lossy().to_string(),
    );

    let b = Instance::start_with(
        "instance-b",
        &[("KITE_TLS_CERT", &cert), ("KITE_TLS_KEY", &key)],
    )
    .await;
    assert!(b.url.starts_with("https://"), "{}", b.url);
    let a = Instance::start_with("instance-a", &[("KITE_PEER_CA", &ca)]).await;
    // A second sender without the CA: its deliveries fail certificate verification.
    let c = Instance::start_with("instance-c", &[("KITE_PEER_FAILURE_THRESHOLD", "1000")]).await;

    let (s, t) = b_api(
        &b,
        "/api/federation/tokens",
        serde_json::json!({"label":"a"}),
        &ca,
    )
    .await;
    assert_eq!(s, 201);
    let token = t["token"].as_str().expect("token").to_string();
    let (s, _) = b_api(
        &b,
        "/api/federation/trusted-senders",
        serde_json::json!({"name":"a","inbound_token":token}),
        &ca,
    )
    .await;
    assert_eq!(s, 201);
    let hook = format!("{}/hooks/default/kite", b.url);
    add_peer(&a, "b", &hook, &token, &["*"], 3).await;
    let c_peer = add_peer(&c, "b", &hook, &token, &["*"], 3).await;

    assert_eq!(
        a.hook("stripe", &stripe_event("evt_tls", "charge.succeeded"))
            .await
            .0,
        202
    );
    assert_eq!(
        c.hook("stripe", &stripe_event("evt_tls_c", "charge.succeeded"))
            .await
            .0,
        202
    );
    assert_all_once(&b, &["evt_tls".to_string()], Duration::from_secs(30)).await;
    let row = eventually("C's attempt failed", Duration::from_secs(30), || async {
        c.outbox(&format!("peer_id={c_peer}"))
            .await
            .into_iter()
            .find(|r| r["attempts"].as_i64().unwrap_or(0) >= 1)
    })
    .await;
    let err = row["last_error"].as_str().unwrap_or("").to_lowercase();
    assert!(
        err.contains("certificate") || err.contains("unknownissuer") || err.contains("issuer"),
        "{err}"
    );
    assert_eq!(b.count_events("evt_tls_c").await, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn b_api(
    b: &Instance,
    path: &str,
    body: serde_json::Value,
    ca: &str,
) -> (u16, serde_json::Value) {
    let pem = std::fs::read(ca).expect("ca");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
        .build()
        .expect("client");
    let r = client
        .post(format!("{}{path}", b.url))
        .bearer_auth(&b.key)
        .json(&body)
        .send()
        .await
        .expect("https request");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}
