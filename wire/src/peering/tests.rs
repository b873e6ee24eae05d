//! The peering wire formats' tests.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

fn offer() -> Terms {
    Terms {
        scopes: vec!["stripe.*".into()],
        max_hops: 3,
    }
}

#[test]
fn invitations_round_trip_and_refuse_junk() {
    let inv = Invitation {
        url: "http://127.0.0.1:7700".into(),
        team: "default".into(),
        server_name: "a".into(),
        token: Invitation::mint_token(),
        offer: offer(),
    };
    let s = inv.encode();
    assert!(s.starts_with(INVITATION_PREFIX) && !s.contains(char::is_whitespace));
    assert_eq!(Invitation::decode(&format!(" {s}\n")), Ok(inv.clone()));
    assert_eq!(Invitation::decode("kiteinv_!!"), Err(BadInvitation));
    assert_eq!(Invitation::decode("hello"), Err(BadInvitation));
    assert_eq!(
        Invitation::decode(&format!(
            "{INVITATION_PREFIX}{}",
            URL_SAFE_NO_PAD.encode("{}")
        )),
        Err(BadInvitation)
    );
    for bad in [
        Invitation {
            server_name: "<img src=x>".into(),
            ..inv.clone()
        },
        Invitation {
            team: "a/../../admin".into(),
            ..inv.clone()
        },
        Invitation {
            offer: Terms {
                max_hops: 1000,
                ..offer()
            },
            ..inv.clone()
        },
    ] {
        assert_eq!(Invitation::decode(&bad.encode()), Err(BadInvitation));
    }
}

#[test]
fn terms_are_within_a_bound_only_when_they_ask_no_more() {
    let bound = Terms {
        scopes: vec!["stripe.*".into(), "com.kite.agent.message".into()],
        max_hops: 2,
    };
    assert!(offer().within(&Terms {
        max_hops: 3,
        ..bound.clone()
    }));
    assert!(!offer().within(&bound), "more hops");
    let wider = Terms {
        scopes: vec!["*".into()],
        max_hops: 1,
    };
    assert!(!wider.within(&bound), "another scope");
    assert!(Terms {
        scopes: vec![],
        max_hops: 1
    }
    .check()
    .is_err());
    assert!(Terms {
        max_hops: 1000,
        ..offer()
    }
    .check()
    .is_err());
}

#[test]
fn a_team_another_server_names_stays_one_path_segment() {
    for ok in ["default", "team-1", "Team_A.b"] {
        assert!(plausible_team(ok), "{ok}");
    }
    let long = "t".repeat(65);
    for bad in [
        "",
        "a/b",
        "a?b",
        "a#b",
        "a%2Fb",
        "a\\b",
        "a b",
        "é",
        long.as_str(),
    ] {
        assert!(!plausible_team(bad), "{bad:?}");
    }
}

#[test]
fn peer_bodies_are_read_whole_and_bounded() {
    let key = crate::identity::SecretKey::generate().public().to_base64();
    let k = |id: &str| PublishedKey {
        key_id: id.into(),
        public_key: key.clone(),
        valid_from: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
        valid_until: None,
    };
    let hb = |name: &str, keys: Vec<PublishedKey>| {
        serde_json::to_vec(&Heartbeat {
            server_name: name.into(),
            team: "t".into(),
            keys,
            sent_at: chrono::Utc::now(),
            protocol_versions: vec!["kite-federation/2".into()],
        })
        .unwrap()
    };
    assert!(read::<Heartbeat>(&hb("b", vec![k("ed25519:1")]), 4096).is_ok());
    let too_many: Vec<_> = (0..9).map(|i| k(&format!("ed25519:{i}"))).collect();
    assert_eq!(
        read::<Heartbeat>(&hb("b", too_many), 1 << 20).map_err(|e| e.code()),
        Err(crate::Code::InvalidKeys)
    );
    assert_eq!(
        read::<Heartbeat>(&hb("b", vec![k("ed25519:1"), k("ed25519:1")]), 4096)
            .map_err(|e| e.code()),
        Err(crate::Code::InvalidKeys)
    );
    assert_eq!(
        read::<Heartbeat>(&hb("<b>", vec![]), 4096).map_err(|e| e.code()),
        Err(crate::Code::InvalidServerName)
    );
    assert_eq!(
        read::<Heartbeat>(&hb("b", vec![]), 10).map_err(|e| e.code()),
        Err(crate::Code::InvalidBody)
    );
    let bad_key = PublishedKey {
        public_key: "AAAA".into(),
        ..k("ed25519:1")
    };
    assert!(bad_key.check().is_err());
    assert_eq!(
        read::<KeyQuery>(br#"{"server_name":"a"}"#, 4096).map_err(|e| e.code()),
        Err(crate::Code::InvalidBody)
    );
}

#[test]
fn servers_agree_on_the_newest_version_both_speak() {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        agree(&v(&["kite-federation/1", "kite-federation/2"])),
        Some("kite-federation/2")
    );
    assert_eq!(agree(&v(&["kite-federation/1"])), None);
    assert_eq!(agree(&[]), None);
}

#[test]
fn endpoints_name_the_team() {
    let e = Endpoints::at("https://kite.example/");
    assert_eq!(
        e.accept,
        "https://kite.example/federation/v1/teams/{team}/accept"
    );
    assert_eq!(
        hook_url("https://kite.example", "t"),
        "https://kite.example/hooks/t/kite"
    );
}
