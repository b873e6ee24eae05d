//! kite's domain states as types (`kite_api::types`): what an outbox row, a peer and an API
//! key can be, stored as text with `ToSql`/`FromSql`.

pub use kite_api::types::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for s in OutboxState::ALL {
            assert_eq!(OutboxState::parse(s.as_str()), Some(*s));
            assert_eq!(
                serde_json::to_string(s).ok(),
                Some(format!("\"{}\"", s.as_str()))
            );
        }
        assert_eq!(SkipReason::MaxHops.to_string(), "max_hops");
        assert_eq!(PeerHealth::parse("sleepy"), None);
        assert!(Permission::Admin.allows(Permission::Read));
        assert!(!Permission::Read.allows(Permission::Write));
    }

    /// The schema's CHECK lists are these enums, and every quoted state the store's SQL
    /// names is one of their values. (The SQL keeps literals rather than bound enums: the
    /// partial index `outbox_pending_due` only serves a literal `state = 'pending'`.)
    #[test]
    fn the_sql_speaks_these_types() {
        let schema = [
            include_str!("../../migrations/V1__init.sql"),
            include_str!("../../migrations/V2__peer_health.sql"),
            include_str!("../../migrations/V6__federation.sql"),
            include_str!("../../migrations/V11__guides.sql"),
            include_str!("../../migrations/V12__source_scheme.sql"),
        ]
        .concat();
        let check = |column: &str| -> Vec<String> {
            let at = schema
                .rfind(&format!("CHECK ({column} IN ("))
                .unwrap_or_else(|| panic!("a CHECK on {column}"));
            let list = &schema[at..];
            let list = &list[list.find("IN (").unwrap_or(0) + 4..list.find("))").unwrap_or(0)];
            list.split(',')
                .map(|v| v.trim().trim_matches('\'').to_owned())
                .collect()
        };
        let names = |all: &[&str]| all.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let texts = |v: Vec<&'static str>| names(&v);
        assert_eq!(
            check("state"),
            texts(OutboxState::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            check("status"),
            texts(PeerStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            check("health"),
            texts(PeerHealth::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            check("default_mode"),
            texts(FederationMode::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            check("min_signature_protocol"),
            texts(SignatureProtocol::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            check("permission"),
            texts(Permission::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(check("scheme"), names(kite_wire::provider::Scheme::NAMES));

        let sql = [
            include_str!("outbox.rs"),
            include_str!("peers.rs"),
            include_str!("federation/policy.rs"),
            include_str!("federation/invitations.rs"),
            include_str!("federation/handshake_peers.rs"),
            include_str!("federation/pinned_keys.rs"),
            include_str!("federation/heartbeats.rs"),
            include_str!("federation/traffic.rs"),
            include_str!("stream.rs"),
            include_str!("events/mod.rs"),
            include_str!("events/routed.rs"),
            include_str!("keys.rs"),
        ]
        .concat();
        let known: Vec<&str> = OutboxState::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(PeerStatus::ALL.iter().map(|s| s.as_str()))
            .chain(PeerHealth::ALL.iter().map(|s| s.as_str()))
            .chain(Permission::ALL.iter().map(|s| s.as_str()))
            .collect();
        for state in ["state", "status", "health"] {
            for (i, _) in sql.match_indices(&format!("{state} = '")) {
                let rest = &sql[i + state.len() + 4..];
                let value = &rest[..rest.find('\'').unwrap_or(0)];
                assert!(
                    known.contains(&value),
                    "{state} = '{value}' is no enum value"
                );
            }
        }
    }
}
