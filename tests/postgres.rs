//! End-to-end: the real binary with `OUTPUTS=log,postgres` in front of a
//! private throwaway PostgreSQL cluster. 10,000 collect events, the cluster
//! stopped with `-m immediate` in the middle and started again: every event
//! that got a 202 is in the table exactly once, and a restart of trackgate
//! from an unacknowledged checkpoint inserts nothing new.

#[path = "../src/sink/postgres/testdb.rs"]
mod pg;

mod common;
use common::sinks::*;
use common::*;
use pg::TestCluster;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TABLE: &str = "events_json";

/// trackgate with a log sink that can never write (`/dev/full`): it never
/// passes a journal segment, so the journal keeps every event and the
/// postgres sink can be made to replay them all.
fn start(c: &TestCluster, dir: &TempDir, extra: &[(&str, &str)]) -> Proc {
    let data = dir.path().join("data").display().to_string();
    let log = "/dev/full".to_string();
    let dead = dir.path().join("dead.ndjson").display().to_string();
    let dsn = c.dsn("postgres");
    let mut env: Vec<(&str, &str)> = vec![
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("OUTPUTS", "log,postgres"),
        ("PG_DSN", &dsn),
        ("PG_DEAD_LETTER", &dead),
        ("PG_FLUSH_MS", "50"),
        ("DATA_DIR", &data),
        ("LOG_PATH", &log),
    ];
    env.extend_from_slice(extra);
    Proc::start(&env)
}

/// Posts `n` events in batches of 10 starting at id `from`; returns the ids
/// that got a 202.
fn post(addr: SocketAddr, token: &str, from: u64, n: u64) -> HashSet<String> {
    let mut acked = HashSet::new();
    let mut i = from;
    while i < from + n {
        let ids: Vec<String> = (i..(i + 10).min(from + n)).map(event_id).collect();
        if let Some((202, _)) = send(addr, &collect_req(token, &ids, 20)) {
            acked.extend(ids.iter().cloned());
        }
        i += 10;
    }
    acked
}

fn count(c: &TestCluster, what: &str) -> u64 {
    c.psql(
        "postgres",
        &format!("SELECT {what} FROM {TABLE} WHERE payload->>'type' = 'load'"),
    )
    .parse()
    .unwrap_or(0)
}

/// Waits until the table holds `want` distinct collect events.
fn wait_rows(c: &TestCluster, want: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let have = count(c, "count(DISTINCT event_id)");
        if have >= want || Instant::now() > deadline {
            return have;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn ten_thousand_events_survive_an_immediate_stop_of_the_cluster() {
    let c = TestCluster::start();
    let dir = TempDir::new("pg-e2e");
    let p = start(&c, &dir, &[]);
    let token = token(p.addr);

    let mut acked = post(p.addr, &token, 0, 5000);
    assert_eq!(acked.len(), 5000, "{}", p.logs());
    c.stop_immediate();
    // The journal holds what PostgreSQL cannot take: collect keeps answering.
    acked.extend(post(p.addr, &token, 5000, 5000));
    assert_eq!(acked.len(), 10_000, "{}", p.logs());
    let ready = get(p.addr, "/readyz").text();
    assert!(ready.contains("postgres"), "{ready}");
    c.restart();

    let have = wait_rows(&c, 10_000, Duration::from_secs(60));
    assert_eq!(have, 10_000, "{}", p.logs());
    assert_eq!(count(&c, "count(*)"), 10_000, "each event once");
    let in_table: HashSet<String> = c
        .psql(
            "postgres",
            &format!("SELECT event_id FROM {TABLE} WHERE payload->>'type' = 'load'"),
        )
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(in_table, acked, "every acknowledged event, no other");
    assert_eq!(p.stop(), 0);

    // Replaying the journal inserts nothing new: restart with the postgres
    // checkpoint removed, so the sink reads the whole journal (kept by the
    // stuck log sink) from its start again.
    let cp = dir.path().join("data").join("checkpoints").join("postgres");
    std::fs::remove_file(&cp).expect("remove the postgres checkpoint");
    let p = start(
        &c,
        &dir,
        &[("METRICS_ENABLED", "true"), ("METRICS_ADDR", "127.0.0.1:0")],
    );
    let series_dup = r#"trackgate_sink_events_duplicate_total{sink="postgres"}"#;
    let series_acked = r#"trackgate_sink_events_acknowledged_total{sink="postgres"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut dup, mut acked_again) = (0.0, 0.0);
    while Instant::now() < deadline {
        let m = scrape(p.metrics_addr());
        dup = metric(&m, series_dup).unwrap_or(0.0);
        acked_again = metric(&m, series_acked).unwrap_or(0.0);
        if acked_again >= 10_000.0 && dup >= acked_again {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        acked_again >= 10_000.0,
        "replayed {acked_again}: {}",
        p.logs()
    );
    assert_eq!(dup, acked_again, "every replayed event was a duplicate");
    assert_eq!(count(&c, "count(*)"), 10_000, "{}", p.logs());
    assert_eq!(p.stop(), 0);
}

#[test]
fn postgres_without_a_dsn_is_refused_at_start() {
    let (code, _, err) = run_once(
        &[],
        &[
            ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
            ("HMAC_SECRET", SECRET),
            ("OUTPUTS", "postgres"),
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("PG_DSN"), "{err}");
}
