//! `signature::verify` (X-Kite-Signature) on arbitrary secrets, bodies and header values.
//!
//! Invariants: `sign` then `verify` is true (also with surrounding whitespace and upper-case
//! hex); a changed body or a changed digit is refused; and any header the fuzzer makes
//! `verify` accept is the real signature (no forgery, no prefix/length confusion).
#![no_main]

use arbitrary::Arbitrary;
use kite_wire::signature::{sign, verify};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a str,
    header: &'a str,
    flip: u8,
    body: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let Input {
        secret,
        header,
        flip,
        body,
    } = input;

    let good = sign(secret, body);
    let hex = good.strip_prefix("sha256=").expect("sha256= prefix");
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

    // Arbitrary header: accepted only if it is the signature itself.
    if verify(secret, body, header) {
        let got = header
            .trim()
            .strip_prefix("sha256=")
            .expect("accepted without prefix");
        assert_eq!(
            got.to_ascii_lowercase(),
            hex,
            "accepted a header that is not the signature"
        );
    }

    // Round trip.
    assert!(verify(secret, body, &good));
    assert!(verify(secret, body, &format!(" \t{good}\n")));
    assert!(verify(
        secret,
        body,
        &format!("sha256={}", hex.to_ascii_uppercase())
    ));
    assert!(
        !verify(secret, body, hex),
        "accepted without the sha256= prefix"
    );
    assert!(
        !verify(secret, body, &good[..good.len() - 2]),
        "accepted a truncated signature"
    );

    // Tampering.
    let mut other = body.to_vec();
    other.push(flip);
    assert!(!verify(secret, &other, &good), "accepted a changed body");
    let i = 7 + usize::from(flip) % 64;
    let mut bytes = good.clone().into_bytes();
    bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
    let tampered = String::from_utf8(bytes).expect("ascii");
    assert!(!verify(secret, body, &tampered), "accepted a changed digit");
});
