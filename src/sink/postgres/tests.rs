//! The PostgreSQL sink against a real server: a throwaway cluster of its
//! own ([`TestCluster`]), never a system service or a mock.

use super::testdb::TestCluster;
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Event `i`: a line as trackgate's encoder writes it (event_id, timestamp,
/// type, source, ..., payload), with a distinct event_id per `i`.
fn event(i: u64) -> Vec<u8> {
    event_with(i, &format!("{{\"n\":{i}}}"))
}

fn event_with(i: u64, payload: &str) -> Vec<u8> {
    let id = Uuid::from_u128(0x0192f5e0_8b7a_7000_8000_000000000000 | u128::from(i));
    let mut out = format!("{{\"event_id\":\"{id}\",\"timestamp\":\"").into_bytes();
    crate::clock::write_rfc3339_millis(&mut out, 1_795_829_081_000 + i);
    out.extend_from_slice(
        format!(
            "\",\"type\":\"click\",\"source\":\"test\",\"ip\":null,\"ip_hash\":null,\"ua\":null,\
             \"url\":\"https://shop.example/p?i={i}\",\"referrer\":null,\"session_id\":null,\
             \"pageview_id\":null,\"auth\":null,\"payload\":{payload}}}"
        )
        .as_bytes(),
    );
    out
}

fn events(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(event).collect()
}

fn refs(lines: &[Vec<u8>]) -> Vec<&[u8]> {
    lines.iter().map(Vec::as_slice).collect()
}

fn config(cluster: &TestCluster, db: &str, table: &str) -> PgConfig {
    PgConfig {
        dsn: cluster.dsn(db),
        table: table.into(),
        batch_size: 500,
        flush_interval: Duration::from_millis(500),
        copy: true,
        create_table: true,
        dead_letter: cluster.scratch().join(format!("{db}-{table}.dead.ndjson")),
    }
}

fn sink(cfg: PgConfig) -> PgSink {
    PgSink::new(cfg).expect("sink settings")
}

/// `count(*)` and `count(DISTINCT event_id)` of a table.
fn counts(cluster: &TestCluster, db: &str, table: &str) -> (u64, u64) {
    let out = cluster.psql(
        db,
        &format!("SELECT count(*) || ',' || count(DISTINCT event_id) FROM {table}"),
    );
    let (a, b) = out.split_once(',').expect("two counts");
    (a.parse().expect("count"), b.parse().expect("count"))
}

#[test]
fn settings_are_checked_without_connecting() {
    for ok in [
        "events_json",
        "e",
        "_x9",
        "a_very_long_name_that_is_exactly_fifty_one_bytes_xx",
    ] {
        assert_eq!(check_table(ok), Ok(()), "{ok}");
    }
    for bad in [
        "",
        "Events",
        "9events",
        "public.events",
        "ev-ents",
        "events;drop",
        "a_very_long_name_that_is_exactly_fifty_two_bytes_xxxx",
    ] {
        assert!(check_table(bad).is_err(), "{bad}");
    }
    let secret = "host=db user=u password=hunter2-secret dbname=x";
    assert!(parse_dsn(secret).is_ok());
    let err = parse_dsn("host=db password=hunter2-secret sslmode=require").unwrap_err();
    assert!(err.contains("sslmode") && !err.contains("hunter2"), "{err}");
    let err = parse_dsn("postgres://u:hunter2-secret@db:notaport/x").unwrap_err();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(parse_dsn("  ").unwrap_err().contains("connection string"));

    let base = PgConfig {
        dsn: secret.into(),
        table: DEFAULT_TABLE.into(),
        batch_size: 500,
        flush_interval: Duration::from_millis(500),
        copy: true,
        create_table: true,
        dead_letter: "dead.ndjson".into(),
    };
    let made = PgSink::new(base.clone()).unwrap();
    assert!(!format!("{made:?}").contains("hunter2"));
    let msg = |cfg: PgConfig| PgSink::new(cfg).unwrap_err().to_string();
    assert!(msg(PgConfig {
        table: "Bad".into(),
        ..base.clone()
    })
    .contains("PG_TABLE"));
    assert!(msg(PgConfig {
        batch_size: 0,
        ..base.clone()
    })
    .contains("PG_BATCH_SIZE"));
    assert!(msg(PgConfig {
        dsn: String::new(),
        ..base.clone()
    })
    .contains("PG_DSN"));
    assert!(msg(PgConfig {
        dead_letter: PathBuf::new(),
        ..base
    })
    .contains("PG_DEAD_LETTER"));
}

#[test]
fn schema_is_init_sql_with_the_table_renamed() {
    // The default table: the very statements of deploy/init.sql, quoted.
    // (init.sql's comment quotes a shell word; compare without quotes.)
    assert_eq!(
        schema_sql(DEFAULT_TABLE).replace('"', ""),
        INIT_SQL.replace('"', "")
    );
    let s = schema_sql("clicks");
    assert!(s.contains("CREATE TABLE IF NOT EXISTS \"clicks\" ("), "{s}");
    assert!(s.contains("\"clicks_ts_idx\" ON \"clicks\" (ts)"), "{s}");
    assert!(
        s.contains("\"clicks_payload_idx\" ON \"clicks\" USING GIN (payload)"),
        "{s}"
    );
    assert!(!s.contains(DEFAULT_TABLE), "{s}");
    let sql = insert_values_sql("INSERT INTO t VALUES ", 2);
    assert_eq!(
        sql,
        "INSERT INTO t VALUES ($1,$2,$3),($4,$5,$6) ON CONFLICT (event_id) DO NOTHING"
    );
    assert_eq!(MAX_PARAMS / COLUMNS * COLUMNS, 65_535);
}

#[test]
fn a_server_that_is_down_is_a_connection_failure() {
    // A port nothing listens on: `new` succeeds, `deliver` says "connect".
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("trackgate-pg-down-{}", std::process::id()));
    let mut s = sink(PgConfig {
        dsn: format!("host=127.0.0.1 port={port} user=x dbname=y connect_timeout=2"),
        table: DEFAULT_TABLE.into(),
        batch_size: 10,
        flush_interval: Duration::from_millis(500),
        copy: true,
        create_table: true,
        dead_letter: dir.join("dead.ndjson"),
    });
    let lines = events(0..3);
    let err = s.deliver(&refs(&lines)).unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert_eq!(err.kind(), SinkFailure::Connect);
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}/y as x")) && text.contains("PG_DSN"),
        "{text}"
    );
    assert!(!dir.exists(), "nothing was dead-lettered");
}

#[test]
fn a_unix_socket_dsn_works() {
    let c = TestCluster::shared();
    let mut s = sink(PgConfig {
        dsn: c.socket_dsn("postgres"),
        ..config(&c, "postgres", "via_socket")
    });
    let lines = events(0..20);
    assert_eq!(s.deliver(&refs(&lines)).unwrap().written, 20);
    assert_eq!(counts(&c, "postgres", "via_socket"), (20, 20));
}

#[test]
fn init_sql_runs_on_a_fresh_cluster_and_is_the_schema_the_sink_creates() {
    let c = TestCluster::shared();
    let by_psql = c.create_database("schema_psql");
    let by_sink = c.create_database("schema_sink");
    let init = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/init.sql");
    for _ in 0..2 {
        // Twice: idempotent.
        let out = c.psql_args(&by_psql, &["-f", init]);
        assert!(
            out.status.success(),
            "psql -f deploy/init.sql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut s = sink(config(&c, &by_sink, DEFAULT_TABLE));
    let lines = events(0..3);
    assert_eq!(s.deliver(&refs(&lines)).unwrap().written, 3);
    let dump = |db: &str| {
        let out = c.client_tool(
            "pg_dump",
            db,
            &["--schema-only", "--no-owner", "-t", DEFAULT_TABLE],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Without pg_dump's per-run random \restrict key.
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (a, b) = (dump(&by_psql), dump(&by_sink));
    assert!(
        a.contains("CREATE TABLE public.events_json") && a.contains("USING gin (payload)"),
        "{a}"
    );
    assert_eq!(a, b, "init.sql and the sink create different schemas");
    // The whole event line is the payload.
    assert_eq!(
        c.psql(
            &by_sink,
            "SELECT payload->>'type', payload->>'source', count(*) FROM events_json GROUP BY 1, 2"
        ),
        "click|test|3"
    );
    assert_eq!(
        c.psql(
            &by_sink,
            "SELECT count(*) FROM events_json WHERE ts = (payload->>'timestamp')::timestamptz"
        ),
        "3"
    );
}

#[test]
fn batches_are_written_once_and_duplicates_counted() {
    let c = TestCluster::shared();
    for copy in [true, false] {
        let table = if copy { "dedupe_copy" } else { "dedupe_insert" };
        let mut s = sink(PgConfig {
            copy,
            ..config(&c, "postgres", table)
        });
        // 1000 distinct events, 100 of them twice in the same call.
        let mut lines = events(0..1000);
        lines.extend(events(200..300));
        let got = s.deliver(&refs(&lines)).unwrap();
        assert_eq!(
            got,
            Delivered {
                written: 1000,
                duplicates: 100,
                dead_lettered: 0
            },
            "{table}"
        );
        // A replay (the journal read again) inserts nothing new.
        let again = s.deliver(&refs(&lines)).unwrap();
        assert_eq!(
            again,
            Delivered {
                written: 0,
                duplicates: 1100,
                dead_lettered: 0
            }
        );
        assert_eq!(counts(&c, "postgres", table), (1000, 1000));
        assert_eq!(
            c.psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM {table} WHERE ts = (payload->>'timestamp')::timestamptz \
                          AND event_id::text = payload->>'event_id'"
                )
            ),
            "1000"
        );
    }
}

#[test]
fn the_insert_path_splits_a_batch_above_the_parameter_limit() {
    let c = TestCluster::shared();
    // 30,000 events × 3 parameters is above 65,535: two statements, one transaction.
    let n = 30_000;
    assert!(n as usize * COLUMNS > MAX_PARAMS);
    let mut s = sink(PgConfig {
        copy: false,
        batch_size: n as usize,
        ..config(&c, "postgres", "insert_limit")
    });
    let lines = events(0..n);
    assert_eq!(s.deliver(&refs(&lines)).unwrap().written, n);
    assert_eq!(counts(&c, "postgres", "insert_limit"), (n, n));
    assert_eq!(s.deliver(&refs(&lines)).unwrap().duplicates, n);
}

#[test]
fn poison_events_are_bisected_out_to_the_dead_letter_file() {
    let c = TestCluster::shared();
    for copy in [true, false] {
        let table = if copy { "poison_copy" } else { "poison_insert" };
        let cfg = PgConfig {
            copy,
            ..config(&c, "postgres", table)
        };
        let dead_path = cfg.dead_letter.clone();
        let mut s = sink(cfg);
        let mut lines = events(0..1000);
        // The server refuses these (jsonb has no \u0000): found by bisection.
        for i in [0u64, 10, 499, 500, 999] {
            lines[i as usize] = event_with(i, r#"{"bad":"a\u0000b"}"#);
        }
        // These never reach the server.
        lines.push(b"{\"type\":\"no id\",\"timestamp\":\"2026-11-28T01:24:41Z\"}".to_vec());
        lines.push(b"not json at all".to_vec());
        let got = s.deliver(&refs(&lines)).unwrap();
        assert_eq!(
            got,
            Delivered {
                written: 995,
                duplicates: 0,
                dead_lettered: 7
            },
            "{table}"
        );
        assert_eq!(counts(&c, "postgres", table), (995, 995));
        let text = std::fs::read_to_string(&dead_path).unwrap();
        let dead: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(dead.len(), 7, "{text}");
        let bad_ids: Vec<u64> = [0u64, 10, 499, 500, 999].to_vec();
        // Those refused before any round trip come first.
        assert!(dead[0]["error"].as_str().unwrap().contains("event_id"));
        assert_eq!(dead[1]["event"], "not json at all");
        assert!(dead[1]["dead_lettered_at"].as_str().unwrap().ends_with('Z'));
        for (d, i) in dead[2..].iter().zip(&bad_ids) {
            assert_eq!(
                d["event"].as_str().unwrap().as_bytes(),
                &lines[*i as usize][..]
            );
            assert_eq!(d["table"], table);
            let err = d["error"].as_str().unwrap();
            assert!(err.contains("22P05"), "{err}");
        }
        // The good events of the bad batches committed; the bad ones are not in the table.
        assert_eq!(
            c.psql(
                "postgres",
                &format!("SELECT count(*) FROM {table} WHERE payload->'payload' ? 'bad'")
            ),
            "0"
        );
    }
}

#[test]
fn a_refusal_that_is_not_about_the_events_is_returned_not_bisected() {
    let c = TestCluster::shared();
    // PG_CREATE_TABLE=false and no table: every batch would fail; nothing is
    // dead-lettered, the error says what to fix.
    let cfg = PgConfig {
        create_table: false,
        ..config(&c, "postgres", "never_created")
    };
    let dead_path = cfg.dead_letter.clone();
    let mut s = sink(cfg);
    let lines = events(0..10);
    let err = s.deliver(&refs(&lines)).unwrap_err();
    assert!(!err.is_connection(), "{err}");
    assert_eq!(err.kind(), SinkFailure::Write);
    assert_eq!(err.sqlstate(), Some("42P01"));
    assert!(err.to_string().contains("deploy/init.sql"), "{err}");
    assert!(!dead_path.exists());
    // Once the table exists (the operator ran init.sql), the same sink delivers.
    c.psql("postgres", &schema_sql("never_created"));
    assert_eq!(s.deliver(&refs(&lines)).unwrap().written, 10);
}

/// The runner's part, for tests: deliver until it succeeds; every failure
/// must be a connection failure. Returns the result and the failures seen.
fn deliver_until_ok(s: &mut PgSink, batch: &[&[u8]], on_failure: &dyn Fn(u32)) -> (Delivered, u32) {
    let mut failures = 0;
    loop {
        match s.deliver(batch) {
            Ok(d) => return (d, failures),
            Err(e) => {
                assert!(e.is_connection(), "not a connection failure: {e}");
                assert_eq!(e.kind(), SinkFailure::Connect);
                failures += 1;
                assert!(failures < 2000, "never recovered: {e}");
                on_failure(failures);
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn a_cluster_stopped_immediately_loses_no_committed_event() {
    // Its own cluster: this test stops it.
    let c = Arc::new(TestCluster::start());
    let db = "postgres";
    let table = "outage";
    let mut s = sink(config(&c, db, table));
    let all = events(0..10_000);
    let batches: Vec<Vec<&[u8]>> = all.chunks(500).map(refs).collect();
    let mut total = Delivered::default();
    let add = |t: &mut Delivered, d: Delivered| {
        t.written += d.written;
        t.duplicates += d.duplicates;
        t.dead_lettered += d.dead_lettered;
    };

    // 1. Between deliveries: stop, fail, start again, redeliver.
    for b in &batches[..6] {
        add(&mut total, s.deliver(b).unwrap());
    }
    c.stop_immediate();
    for _ in 0..3 {
        let err = s.deliver(&batches[6]).unwrap_err();
        assert!(err.is_connection(), "{err}");
        assert_eq!(err.kind(), SinkFailure::Connect);
    }
    c.restart();
    let (d, _) = deliver_until_ok(&mut s, &batches[6], &|_| {});
    add(&mut total, d);
    assert_eq!(counts(&c, db, table), (3500, 3500));

    // 2. During deliveries: another thread stops the server while this one
    // keeps delivering, and starts it again once a failure was seen.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let saw_failure = Arc::new(AtomicBool::new(false));
    let restarts = Arc::new(AtomicU64::new(0));
    let stopper = {
        let (c, saw, restarts) = (
            Arc::clone(&c),
            Arc::clone(&saw_failure),
            Arc::clone(&restarts),
        );
        std::thread::spawn(move || {
            if stop_rx.recv().is_err() {
                return;
            }
            c.stop_immediate();
            // Wait for the delivering thread to notice (or to finish).
            while !saw.load(Ordering::Acquire) && stop_rx.try_recv().is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
            c.restart();
            restarts.fetch_add(1, Ordering::Release);
        })
    };
    let mut failures_during = 0;
    for (i, b) in batches[7..].iter().enumerate() {
        if i == 1 {
            stop_tx.send(()).unwrap();
        }
        let (d, f) = deliver_until_ok(&mut s, b, &|_| saw_failure.store(true, Ordering::Release));
        failures_during += f;
        add(&mut total, d);
    }
    let _ = stop_tx.send(());
    stopper.join().unwrap();
    if restarts.load(Ordering::Acquire) == 0 {
        c.restart();
    }

    // Every event is there once; what was redelivered after a commit whose
    // acknowledgement was lost came back as a duplicate.
    assert_eq!(counts(&c, db, table), (10_000, 10_000));
    assert_eq!(total.written, 10_000);
    assert_eq!(total.dead_lettered, 0);
    eprintln!(
        "outage test: {failures_during} failed deliveries while the server was stopped mid-run, \
         {} duplicates on redelivery",
        total.duplicates
    );
    // Replaying everything inserts nothing new.
    let mut replay = Delivered::default();
    for b in &batches {
        add(&mut replay, s.deliver(b).unwrap());
    }
    assert_eq!(
        replay,
        Delivered {
            written: 0,
            duplicates: 10_000,
            dead_lettered: 0
        }
    );
    assert_eq!(counts(&c, db, table), (10_000, 10_000));
}

/// The figure for PERFORMANCE.md: events/s into a fresh table and on a full
/// replay (every event a duplicate), 10,000 events in 20 batches of 500.
/// `cargo test --release --lib sink::postgres::tests::throughput -- --nocapture`
#[test]
fn throughput() {
    let c = TestCluster::shared();
    for copy in [true, false] {
        let table = if copy { "speed_copy" } else { "speed_insert" };
        let mut s = sink(PgConfig {
            copy,
            ..config(&c, "postgres", table)
        });
        let warm = [event(1 << 40)];
        s.deliver(&refs(&warm)).unwrap();
        let all = events(0..10_000);
        let batches: Vec<Vec<&[u8]>> = all.chunks(500).map(refs).collect();
        let mut rates = Vec::new();
        for pass in ["new", "replay"] {
            let started = Instant::now();
            let mut done = Delivered::default();
            for b in &batches {
                let d = s.deliver(b).unwrap();
                done.written += d.written;
                done.duplicates += d.duplicates;
            }
            let secs = started.elapsed().as_secs_f64();
            let expected = if pass == "new" {
                (10_000, 0)
            } else {
                (0, 10_000)
            };
            assert_eq!((done.written, done.duplicates), expected);
            rates.push(format!("{pass}: {:.0} events/s", 10_000.0 / secs));
        }
        eprintln!(
            "postgres sink, PG_COPY={copy}, 10,000 events in batches of 500: {}",
            rates.join(", ")
        );
    }
}

#[test]
fn a_server_stopped_mid_transaction_commits_nothing_of_that_batch() {
    let c = Arc::new(TestCluster::start());
    let (db, table) = ("postgres", "midtx");
    let mut s = sink(config(&c, db, table));
    let first = events(0..100);
    assert_eq!(s.deliver(&refs(&first)).unwrap().written, 100);
    // A trigger holds the batch's INSERT open on the event marked "slow", so
    // the server is stopped while the transaction is in progress.
    c.psql(
        db,
        &format!(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.payload->'payload' ? 'slow' THEN PERFORM pg_sleep(600); END IF; RETURN NEW; END $$; \
             CREATE TRIGGER slow BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION slow()"
        ),
    );
    let mut second = events(100..600);
    second[250] = event_with(350, r#"{"slow":true}"#);
    let stopper = {
        let c = Arc::clone(&c);
        std::thread::spawn(move || {
            for _ in 0..3000 {
                let waiting = c.psql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
                );
                if waiting == "1" {
                    c.stop_immediate();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        })
    };
    let err = s.deliver(&refs(&second)).unwrap_err();
    assert!(
        stopper.join().unwrap(),
        "the batch never reached the trigger"
    );
    assert!(matches!(err, PgError::ConnectionLost { .. }), "{err}");
    assert!(err.is_connection() && err.kind() == SinkFailure::Connect);
    c.restart();
    c.psql(db, &format!("DROP TRIGGER slow ON {table}"));
    assert_eq!(
        counts(&c, db, table),
        (100, 100),
        "nothing of the interrupted batch"
    );
    let (d, _) = deliver_until_ok(&mut s, &refs(&second), &|_| {});
    assert_eq!(
        d,
        Delivered {
            written: 500,
            duplicates: 0,
            dead_lettered: 0
        }
    );
    assert_eq!(counts(&c, db, table), (600, 600));
}
