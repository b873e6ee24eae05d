//! Unit tests of the chaos run's parts.

use super::cluster::process_env;
use super::*;

#[test]
fn schedule_cycles_through_every_kind_in_order() {
    let kinds: Vec<FaultKind> = (0..13).map(FaultKind::nth).collect();
    assert_eq!(&kinds[..6], &FaultKind::ALL);
    assert_eq!(&kinds[6..12], &FaultKind::ALL);
    assert_eq!(kinds[12], FaultKind::KillRouter);
    assert_eq!(FaultKind::nth(4), FaultKind::KillB);
    assert_eq!(FaultKind::nth(5), FaultKind::KillIngress);
    let mut tally = FaultTally::default();
    for i in 0..8 {
        tally.record(FaultKind::nth(i));
    }
    assert_eq!(tally.injected, [2, 2, 1, 1, 1, 1, 0, 0, 0, 0]);
    assert_eq!(tally.total(), 8);
}

#[test]
fn backoff_doubles_to_the_cap() {
    let mut d = RETRY_FIRST;
    let mut seen = vec![d];
    for _ in 0..6 {
        d = next_backoff(d);
        seen.push(d);
    }
    let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000]);
    assert!(retryable(reqwest::StatusCode::BAD_GATEWAY));
    assert!(retryable(reqwest::StatusCode::TOO_MANY_REQUESTS));
    assert!(!retryable(reqwest::StatusCode::BAD_REQUEST));
}

fn result(n: u64, fate: Fate, attempts: u32, sample: Option<&str>) -> EventResult {
    EventResult {
        n,
        fate,
        attempts,
        unavailable: attempts - 1,
        transport: 0,
        server_errors: 0,
        sample: sample.map(str::to_owned),
    }
}

#[test]
fn load_tally_counts_fates_and_dedups_samples() {
    let mut t = LoadTally::new(4);
    t.add(result(0, Fate::Created, 1, None));
    t.add(result(
        2,
        Fate::Duplicate,
        3,
        Some("transport: refused 127.0.0.1:4001"),
    ));
    t.add(result(
        1,
        Fate::GaveUp,
        30,
        Some("transport: refused 127.0.0.1:4002"),
    ));
    t.add(result(3, Fate::Refused, 1, Some("HTTP 400: bad")));
    assert_eq!(t.sent, 4);
    assert_eq!(t.accepted_count(), 2);
    assert_eq!(t.accepted, [true, false, true, false]);
    assert_eq!(t.requests, 35);
    assert_eq!(t.unavailable, 31);
    assert_eq!(t.error_samples.len(), 2);
}

#[test]
fn presence_and_losses() {
    let (present, other) = presence("evt_chaos_0\nevt_chaos_2\nevt_chaos_9\nzzz\n", 4);
    assert_eq!(present, [true, false, true, false]);
    assert_eq!(other, 2);
    let accepted = [true, true, false, false];
    assert_eq!(lost_events(&accepted, &present), [1]);
    assert_eq!(unacknowledged_events(&accepted, &present), 1);
    assert_eq!(event_id(7), "evt_chaos_7");
    assert_eq!(
        without_url(
            "error sending request for url (http://h:1/x): client error (Connect): refused"
        ),
        "client error (Connect): refused"
    );
    assert_eq!(without_url("timed out"), "timed out");
}

fn value<'a>(rows: &'a [(String, String)], label: &str) -> &'a str {
    rows.iter()
        .find(|(l, _)| l == label)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no row {label:?} in {rows:#?}"))
}

#[test]
fn table_shows_faults_by_kind_and_the_verdict() {
    let mut load = LoadTally::new(3);
    for n in 0..3 {
        load.add(result(n, Fate::Created, 1, None));
    }
    let mut faults = FaultTally::default();
    for i in 0..7 {
        faults.record(FaultKind::nth(i));
    }
    faults.amqp_connections_closed = 3;
    faults.failed[FaultKind::TerminateDb.index()] = 1;
    let mut report = ChaosReport {
        events: 3,
        rate: 500,
        concurrency: 32,
        fault_every: Duration::from_millis(1500),
        faults,
        load,
        stored_at_a: Some(3),
        unrouted_at_a: Some(0),
        a_outbox: vec![("delivered".to_owned(), 3)],
        b_rows: 3,
        b_distinct: 3,
        drained: true,
        log_path: "/tmp/x.log".to_owned(),
        ..ChaosReport::default()
    };
    let rows = report.rows();
    assert_eq!(value(&rows, "faults injected"), "7");
    assert_eq!(value(&rows, "  SIGKILL A-router + restart"), "2");
    assert_eq!(
        value(&rows, "  close A's AMQP connections"),
        "1 (3 connections closed)"
    );
    assert_eq!(
        value(&rows, "  terminate A's Postgres backends"),
        "1 (0 backends terminated), 1 could not be injected"
    );
    assert_eq!(value(&rows, "sent"), "3 of 3");
    assert!(value(&rows, "accepted").starts_with("3 ("));
    assert_eq!(value(&rows, "A outbox"), "delivered 3");
    assert_eq!(value(&rows, "duplicates in B's store"), "0");
    assert_eq!(value(&rows, "lost (accepted, not at B)"), "0");
    assert!(value(&rows, "result").starts_with("PASS"));
    assert!(report.passed());

    report.b_rows = 4;
    report.lost = vec![1];
    let rows = report.rows();
    assert_eq!(value(&rows, "duplicates in B's store"), "1");
    assert_eq!(value(&rows, "lost (accepted, not at B)"), "1");
    assert_eq!(value(&rows, "  lost ids"), "evt_chaos_1");
    assert_eq!(value(&rows, "result"), "FAIL");
    assert!(!report.passed());
}

#[test]
fn env_sets_roles_and_tuning() {
    let env = process_env("amqp://x", "chaos-a", "postgres://db", "p.a", "k", "router");
    let get = |k: &str| env.get(k);
    assert_eq!(get("KITE_ROLES"), Some("router"));
    assert_eq!(get("KITE_AMQP_PREFIX"), Some("p.a"));
    assert_eq!(get("KITE_RETRY_BASE_MS"), Some("200"));
    assert_eq!(get("KITE_SWEEP_GRACE_MS"), Some("5000"));
    assert_eq!(get("KITE_PEER_PROBE_INTERVAL_MS"), Some("1000"));
    assert_eq!(get("RUST_LOG"), Some("warn"));
    assert_eq!(get("KITE_PORT"), Some("0"));
}

#[test]
fn the_engines_faults_join_the_schedule_only_when_the_run_starts_them() {
    assert_eq!(
        FaultKind::schedule(false, false, false),
        FaultKind::ALL.to_vec()
    );
    let all = FaultKind::schedule(true, true, true);
    for k in FaultKind::ALL.into_iter().chain(FaultKind::ENGINES) {
        assert!(all.contains(&k), "{k:?}");
    }
    let pg_only = FaultKind::schedule(false, true, false);
    assert!(!pg_only.contains(&FaultKind::KillBrokerNode));
    assert!(!pg_only.contains(&FaultKind::Partition));
    assert_eq!(
        pg_only
            .iter()
            .filter(|k| **k == FaultKind::RestartPostgres)
            .count(),
        2
    );
}
