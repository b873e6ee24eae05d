//! The server-to-server bodies another server sends: an accept request, an acceptance, a
//! heartbeat, a key query and its answer, a backfill request and page, a descriptor
//! (`peering::read` for each), and an invitation string (`Invitation::decode`).
//!
//! The first byte picks the body, the rest is the body. Invariants: nothing panics; a body
//! that reads is within every bound (server names DNS-like and at most 253 bytes, at most
//! MAX_KEYS keys each an Ed25519 key, hop limits within 1..=16, scopes that compile) and
//! reads again the same after it is written back.
#![no_main]

use kite_wire::fed::hop_limit::MAX as MAX_HOPS;
use kite_wire::identity::valid_server_name;
use kite_wire::peering::{
    self, AcceptRequest, AcceptResponse, BackfillPage, BackfillRequest, Heartbeat, Invitation,
    KeyQuery, KeyQueryResponse, Message, PublishedKey, ServerDescriptor, MAX_KEYS,
};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 64 * 1024;

fn keys_ok(keys: &[PublishedKey]) {
    assert!(keys.len() <= MAX_KEYS);
    for k in keys {
        assert!(k.check().is_ok(), "{k:?}");
    }
}

/// Reads `data` as `T`; when it reads, checks `ok` and that it reads again once written.
fn roundtrip<T: Message + serde::Serialize + PartialEq + std::fmt::Debug>(
    data: &[u8],
    ok: impl Fn(&T),
) {
    if let Ok(t) = peering::read::<T>(data, MAX) {
        ok(&t);
        let again = serde_json::to_vec(&t).expect("a read body writes");
        let back = peering::read::<T>(&again, usize::MAX).expect("a written body reads");
        assert_eq!(back, t);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 9 {
        0 => roundtrip::<AcceptRequest>(body, |r| {
            assert!(valid_server_name(&r.server.server_name));
            keys_ok(&r.server.keys);
            assert!((1..=MAX_HOPS).contains(&r.max_hops));
        }),
        1 => roundtrip::<AcceptResponse>(body, |r| {
            assert!(valid_server_name(&r.server_name));
            assert!((1..=MAX_HOPS).contains(&r.max_hops));
            assert!((1..=MAX_HOPS).contains(&r.your_max_hops));
            assert!(r.yours().within(&r.yours()));
        }),
        2 => roundtrip::<Heartbeat>(body, |h| {
            assert!(valid_server_name(&h.server_name));
            keys_ok(&h.keys);
        }),
        3 => roundtrip::<KeyQuery>(body, |q| assert!(valid_server_name(&q.server_name))),
        4 => roundtrip::<KeyQueryResponse>(body, |r| {
            assert!(valid_server_name(&r.server_name));
            keys_ok(&r.keys);
        }),
        5 => roundtrip::<BackfillRequest>(body, |_| {}),
        6 => {
            if let Ok(page) = peering::read::<BackfillPage>(body, MAX) {
                for e in &page.events {
                    assert!(serde_json::from_str::<serde_json::Value>(e.get()).is_ok());
                }
            }
        }
        7 => roundtrip::<ServerDescriptor>(body, |d| {
            assert!(valid_server_name(&d.server_name));
            assert!(!d.keys.is_empty());
            keys_ok(&d.keys);
        }),
        _ => {
            if let Ok(inv) = Invitation::decode(&String::from_utf8_lossy(body)) {
                assert!(valid_server_name(&inv.server_name));
                assert!(inv.offer.check().is_ok());
                assert_eq!(Invitation::decode(&inv.encode()), Ok(inv));
            }
        }
    }
});
