//! End-to-end: the journal through the real binary. Durable acks, restart
//! from checkpoints, `kill -9` and graceful restart under load, and a full
//! journal. Every test keeps its `DATA_DIR` and event file in a directory of
//! its own that survives the restarts.

mod common;
use common::sinks::*;
use common::*;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A DATA_DIR and an event file that outlive one process.
struct Place {
    dir: TempDir,
}

impl Place {
    fn new(tag: &str) -> Place {
        Place {
            dir: TempDir::new(tag),
        }
    }
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("events.ndjson")
    }
    fn start(&self, extra: &[(&str, &str)]) -> Proc {
        let data = self.data();
        let log = self.log().display().to_string();
        let mut env: Vec<(&str, &str)> = vec![
            ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
            ("DATA_DIR", &data),
            ("LOG_PATH", &log),
            ("METRICS_ENABLED", "true"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ];
        env.extend_from_slice(extra);
        Proc::start(&env)
    }
}

/// The ids of the collect events in the event file, as often as written.
fn ids_in(path: &Path) -> Vec<String> {
    read_events(path)
        .iter()
        .filter(|e| e["type"] == "load")
        .filter_map(|e| e["event_id"].as_str().map(str::to_string))
        .collect()
}

/// Waits until every id of `want` is in the event file; returns those missing.
fn wait_all(path: &Path, want: &HashSet<String>, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let have: HashSet<String> = ids_in(path).into_iter().collect();
        let missing: Vec<String> = want.difference(&have).cloned().collect();
        if missing.is_empty() || Instant::now() > deadline {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_durable_202_is_in_the_journal_even_when_the_sink_never_wrote_it() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: /dev/full is not available on this machine");
        return;
    }
    let place = Place::new("durable");
    // The sink cannot write: only the journal can hold the event.
    let p = place.start(&[("LOG_PATH", "/dev/full")]);
    let ids: Vec<String> = (0..5).map(event_id).collect();
    let r = send(p.addr, &collect_req(&token(p.addr), &ids, 10)).expect("answer");
    assert_eq!(r.0, 202, "{}", r.1);
    p.signal(libc::SIGKILL);
    drop(p);
    assert!(ids_in(&place.log()).is_empty());
    let p = place.start(&[]);
    let missing = wait_all(
        &place.log(),
        &ids.iter().cloned().collect(),
        Duration::from_secs(20),
    );
    assert!(missing.is_empty(), "lost after kill -9: {missing:?}");
    // The events came from the journal files (counted just after the write).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(p.metrics_addr());
        let replayed = metric(&m, r#"trackgate_sink_events_replayed_total{sink="log"}"#);
        if replayed.is_some_and(|v| v >= 5.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{m}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn restart_resumes_from_the_checkpoint() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: /dev/full is not available on this machine");
        return;
    }
    let place = Place::new("resume");
    let p = place.start(&[("LOG_PATH", "/dev/full"), ("SHUTDOWN_TIMEOUT_S", "1")]);
    let tok = token(p.addr);
    let first: Vec<String> = (0..10).map(event_id).collect();
    assert_eq!(
        send(p.addr, &collect_req(&tok, &first, 10)).map(|r| r.0),
        Some(202)
    );
    assert_eq!(p.stop(), 0);

    // The next start delivers what the last one left in the journal.
    let p = place.start(&[]);
    let second: Vec<String> = (10..15).map(event_id).collect();
    assert_eq!(
        send(p.addr, &collect_req(&tok, &second, 10)).map(|r| r.0),
        Some(202)
    );
    let all: HashSet<String> = first.iter().chain(&second).cloned().collect();
    assert!(wait_all(&place.log(), &all, Duration::from_secs(20)).is_empty());
    // The durable 202 waited for the journal's fsync.
    let m = scrape(p.metrics_addr());
    assert_eq!(
        metric(&m, "trackgate_journal_ack_wait_seconds_count"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(p.stop(), 0);

    // A third start has nothing to deliver again: the checkpoint moved.
    let p = place.start(&[]);
    let third = vec![event_id(99)];
    assert_eq!(
        send(p.addr, &collect_req(&tok, &third, 10)).map(|r| r.0),
        Some(202)
    );
    let want: HashSet<String> = third.iter().cloned().collect();
    assert!(wait_all(&place.log(), &want, Duration::from_secs(20)).is_empty());
    assert_eq!(p.stop(), 0);
    let ids = ids_in(&place.log());
    assert_eq!(ids.len(), 16, "each event exactly once: {ids:?}");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 16);
}

/// `kill -9` under load; with `sink_down` the first process cannot write
/// its event file, so the acknowledged events exist only in its journal.
fn kill_9_under_load(tag: &str, sink_down: bool) {
    let place = Place::new(tag);
    let mut env = vec![("ACK_MODE", "durable"), ("CORES", "2")];
    if sink_down {
        env.push(("LOG_PATH", "/dev/full"));
    }
    let p = place.start(&env);
    let load = Load::start(p.addr, &token(p.addr), 4);
    std::thread::sleep(Duration::from_millis(1500));
    p.signal(libc::SIGKILL);
    let (acked, _) = load.finish();
    drop(p);
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    let before = ids_in(&place.log()).len();
    let _p = place.start(&[]);
    let missing = wait_all(&place.log(), &acked, Duration::from_secs(30));
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events lost after kill -9 ({} were in the file before the restart): {:?}",
        missing.len(),
        acked.len(),
        before,
        &missing[..missing.len().min(5)]
    );
    eprintln!(
        "kill -9 under load (sink down: {sink_down}): {} events acknowledged, {} in the file at the kill, all {} there after the restart",
        acked.len(),
        before,
        acked.len()
    );
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_event() {
    kill_9_under_load("kill9", false);
    if Path::new("/dev/full").exists() {
        kill_9_under_load("kill9-down", true);
    }
}

#[test]
fn graceful_restart_under_load_loses_nothing() {
    let place = Place::new("graceful");
    let p = place.start(&[("CORES", "2")]);
    let tok = token(p.addr);
    let load = Load::start(p.addr, &tok, 4);
    std::thread::sleep(Duration::from_millis(1000));
    let code = p.stop();
    let (acked, pixels) = load.finish();
    assert_eq!(code, 0);
    assert!(acked.len() > 100, "too little load: {}", acked.len());
    // Everything is in the file already: shutdown let the sink drain.
    let have: HashSet<String> = ids_in(&place.log()).into_iter().collect();
    let missing: Vec<&String> = acked.difference(&have).collect();
    assert!(missing.is_empty(), "lost on SIGTERM: {missing:?}");
    let types: HashSet<String> = read_events(&place.log())
        .iter()
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    let lost_px: Vec<&String> = pixels.difference(&types).collect();
    assert!(lost_px.is_empty(), "pixels lost on SIGTERM: {lost_px:?}");

    // The next process goes on; nothing is delivered twice.
    let p = place.start(&[("CORES", "2")]);
    let more = vec![event_id(1 << 40)];
    assert_eq!(
        send(p.addr, &collect_req(&tok, &more, 10)).map(|r| r.0),
        Some(202)
    );
    assert!(wait_all(
        &place.log(),
        &more.iter().cloned().collect(),
        Duration::from_secs(20)
    )
    .is_empty());
    assert_eq!(p.stop(), 0);
    let ids = ids_in(&place.log());
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "an event was delivered twice");
}

#[test]
fn a_full_journal_answers_503_with_retry_after() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: /dev/full is not available on this machine");
        return;
    }
    let place = Place::new("full");
    let p = place.start(&[("LOG_PATH", "/dev/full"), ("JOURNAL_MAX_MB", "1")]);
    let tok = token(p.addr);
    let mut n = 0u64;
    let refused = loop {
        let ids: Vec<String> = (0..10).map(|k| event_id(n * 10 + k)).collect();
        let r = send(p.addr, &collect_req(&tok, &ids, 2000)).expect("answer");
        n += 1;
        if r.0 != 202 {
            break r;
        }
        assert!(n < 200, "the journal never filled");
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert!(refused.1.contains("journal full"), "{}", refused.1);
    assert!(
        refused.1.to_ascii_lowercase().contains("retry-after: 5"),
        "{}",
        refused.1
    );
    // Pixels are still answered; their events are counted as dropped.
    let px = send(
        p.addr,
        b"GET /px.gif?e=late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .expect("pixel");
    assert_eq!(px.0, 200);
    let ready = get(p.addr, "/readyz");
    assert_eq!(ready.status, 503);
    let v: serde_json::Value = serde_json::from_slice(&ready.body).expect("json");
    assert_eq!(v["status"], "refusing_events");
    assert_eq!(v["journal"]["state"], "full");
    let m = scrape(p.metrics_addr());
    assert_eq!(
        metric(
            &m,
            r#"trackgate_events_dropped_total{reason="journal_full"}"#
        ),
        Some(1.0 + 10.0),
        "{m}"
    );
    assert_eq!(metric(&m, "trackgate_journal_full"), Some(1.0));
    let bytes = metric(&m, "trackgate_journal_bytes").unwrap_or(0.0);
    assert!(bytes <= 1024.0 * 1024.0, "{bytes}");
}

#[test]
fn a_second_process_on_the_same_data_dir_waits_and_takes_the_journal_over() {
    let place = Place::new("handover");
    let a = place.start(&[]);
    let tok = token(a.addr);
    let first: Vec<String> = (0..5).map(event_id).collect();
    assert_eq!(
        send(a.addr, &collect_req(&tok, &first, 10)).map(|r| r.0),
        Some(202)
    );

    // The new process starts beside the old one: it serves, and queues.
    let b = place.start(&[]);
    assert!(
        b.wait_log(&["DATA_DIR is locked"], Duration::from_secs(5))
            .is_some(),
        "{}",
        b.logs()
    );
    let ready = get(b.addr, "/readyz");
    let v: serde_json::Value = serde_json::from_slice(&ready.body).expect("json");
    assert_eq!(v["journal"]["state"], "waiting_for_lock", "{v}");
    let second: Vec<String> = (5..10).map(event_id).collect();
    let (addr, req) = (b.addr, collect_req(&tok, &second, 10));
    let pending = std::thread::spawn(move || send(addr, &req).map(|r| r.0));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !pending.is_finished(),
        "a durable 202 before the journal was open"
    );

    // The old process stops; the new one takes the journal and answers.
    assert_eq!(a.stop(), 0);
    assert_eq!(pending.join().expect("client"), Some(202));
    let all: HashSet<String> = first.iter().chain(&second).cloned().collect();
    assert!(wait_all(&place.log(), &all, Duration::from_secs(20)).is_empty());
    let v: serde_json::Value = serde_json::from_slice(&get(b.addr, "/readyz").body).expect("json");
    assert_eq!(v["journal"]["state"], "ok", "{v}");
    assert_eq!(b.stop(), 0);
    let ids = ids_in(&place.log());
    assert_eq!(ids.len(), 10, "{ids:?}");
}

#[test]
fn queued_acks_answer_at_enqueue_and_still_deliver() {
    let place = Place::new("queued");
    let p = place.start(&[("ACK_MODE", "queued"), ("JOURNAL_FSYNC_MS", "1000")]);
    let ids: Vec<String> = (0..3).map(event_id).collect();
    let r = send(p.addr, &collect_req(&token(p.addr), &ids, 10)).expect("answer");
    assert_eq!(r.0, 202, "{}", r.1);
    let want: HashSet<String> = ids.iter().cloned().collect();
    assert!(wait_all(&place.log(), &want, Duration::from_secs(20)).is_empty());
    // Nothing waited for a journal fsync: no ack wait was recorded.
    let m = scrape(p.metrics_addr());
    assert_eq!(
        metric(&m, "trackgate_journal_ack_wait_seconds_count"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(metric(&m, "trackgate_journal_events_total"), Some(3.0));
}

/// Figures for PERFORMANCE.md, not a check: journal throughput (events
/// journaled per second while 8 clients post 100 events per request) and
/// the latency of a collect's 202 (1 client, 10 events per request) with
/// `ACK_MODE=queued`, and `durable` at `JOURNAL_FSYNC_MS` 5 (the default)
/// and 0. Run in release:
/// `cargo test --release --test journal -- --ignored --nocapture figures`.
#[test]
#[ignore]
fn figures_journal_throughput_and_ack_latency() {
    const N: u64 = 100_000;
    for (k, (mode, fsync_ms)) in [("queued", "5"), ("durable", "5"), ("durable", "0")]
        .into_iter()
        .enumerate()
    {
        let place = Place::new("figures");
        let p = place.start(&[("ACK_MODE", mode), ("JOURNAL_FSYNC_MS", fsync_ms)]);
        let tok = token(p.addr);
        let base = (k as u64) << 40;
        let t0 = Instant::now();
        let (acked, _) = post_many(p.addr, &tok, base, N, 8, 100);
        let posted = t0.elapsed();
        assert_eq!(acked.len() as u64, N, "{}", p.logs());
        let journaled = wait_metric(
            p.metrics_addr(),
            "trackgate_journal_events_total",
            N as f64,
            Duration::from_secs(60),
        );
        let journal_s = t0.elapsed();
        // Latency: one client, sequential requests of 10 events.
        let (_, mut waits) = post_many(p.addr, &tok, base + N, 20_000, 1, 10);
        let m = scrape(p.metrics_addr());
        let avg = |name: &str| {
            let sum = metric(&m, &format!("{name}_sum")).unwrap_or(0.0);
            let count = metric(&m, &format!("{name}_count")).unwrap_or(0.0);
            (sum / count.max(1.0) * 1000.0, count)
        };
        let (fsync_avg, fsyncs) = avg("trackgate_journal_fsync_duration_seconds");
        let (ack_wait_avg, ack_waits) = avg("trackgate_journal_ack_wait_seconds");
        eprintln!(
            "FIGURE ACK_MODE={mode} JOURNAL_FSYNC_MS={fsync_ms}: {N} events (8 clients x 100/request) \
             posted in {:.2} s, journaled after {:.2} s = {:.0} events/s; 202 latency (1 client, 10 \
             events/request, {} requests) p50 {:.2} ms p99 {:.2} ms; fsync avg {fsync_avg:.2} ms over \
             {fsyncs} group commits; journal ack wait avg {ack_wait_avg:.2} ms over {ack_waits} acks",
            posted.as_secs_f64(),
            journal_s.as_secs_f64(),
            journaled / journal_s.as_secs_f64(),
            waits.len(),
            quantile_ms(&mut waits, 0.5),
            quantile_ms(&mut waits, 0.99),
        );
        assert_eq!(p.stop(), 0);
    }
}
