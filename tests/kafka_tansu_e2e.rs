//! End-to-end against a real broker: the trackgate binary with
//! `OUTPUTS=kafka` producing to tansu (`tests/kafka_support/tansu.rs`). For
//! each `KAFKA_COMPRESSION` codec, 10,000 collect events are posted and
//! consumed back from the topic: every event that got a 202 is there, keyed
//! by its `event_id`, with the `event_type`, `schema=v1` and `source`
//! headers, and its value is the event trackgate journaled. And `kill -9`
//! under load with durable acks: after the restart every acknowledged event
//! is on the topic.

mod common;
mod kafka_support;

use common::sinks::*;
use common::*;
use kafka_support::tansu::{tansu_or_skip, Tansu};
use kafka_support::{acked_records, check_records, consume_all, tally};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use trackgate::sink::kafka::Compression;

const EVENTS: u64 = 10_000;
/// Events per collect request (`MAX_BATCH_EVENTS`' default).
const PER_REQUEST: u64 = 100;
const CLIENTS: u64 = 4;

#[test]
fn ten_thousand_events_per_codec_through_the_binary_to_tansu() {
    let Some(bin) = tansu_or_skip("ten_thousand_events_per_codec_through_the_binary_to_tansu")
    else {
        return;
    };
    let broker = Tansu::start(bin);
    for (k, codec) in Compression::ALL.into_iter().enumerate() {
        let topic = format!("trackgate-e2e-{}", codec.as_str());
        broker.create_topic(&topic, 3);
        let dir = TempDir::new("kafka-tansu-e2e");
        let data = dir.path().join("data").display().to_string();
        let brokers = broker.brokers();
        let p = Proc::start(&[
            ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
            ("OUTPUTS", "kafka"),
            ("KAFKA_BROKERS", &brokers),
            ("KAFKA_TOPIC", &topic),
            ("KAFKA_COMPRESSION", codec.as_str()),
            ("KAFKA_CONFIG", "linger.ms=5"),
            ("DATA_DIR", &data),
            ("METRICS_ENABLED", "true"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ]);
        let token = token(p.addr);
        let base = (k as u64) << 32;
        let started = Instant::now();
        let (acked, _) = post_many(p.addr, &token, base, EVENTS, CLIENTS, PER_REQUEST);
        let posted = started.elapsed();
        assert_eq!(acked.len() as u64, EVENTS, "{}", p.logs());
        // Acknowledged by the sink (delivery reports), as /metrics counts.
        let series = r#"trackgate_sink_events_acknowledged_total{sink="kafka"}"#;
        let maddr = p.metrics_addr();
        let limit = Instant::now() + Duration::from_secs(60);
        while metric(&scrape(maddr), series) < Some(EVENTS as f64) && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
        let delivered = started.elapsed();

        let ids: Vec<String> = acked.iter().cloned().collect();
        let got = consume_all(&brokers, &topic, &ids, 0, Duration::from_secs(120));
        check_records(&got);
        let (missing, dups) = tally(&got, &ids);
        assert!(
            missing.is_empty(),
            "{}: {} of {} acknowledged events missing: {}",
            codec.as_str(),
            missing.len(),
            ids.len(),
            p.logs()
        );
        for r in &got {
            let v: serde_json::Value = serde_json::from_slice(&r.value).expect("value is JSON");
            assert_eq!(v["event_id"].as_str(), r.key.as_deref(), "key = event_id");
            assert_eq!(v["type"], "load");
            assert_eq!(r.header("event_type"), Some("load"));
            assert_eq!(r.header("schema"), Some("v1"));
            assert_eq!(
                r.header("source").map(str::to_string),
                v["source"].as_str().map(str::to_string)
            );
            assert!(r.header("source").is_some(), "source header");
        }
        eprintln!(
            "binary -> tansu {:<6} {EVENTS} events: posted in {:>6.0} ms, all acknowledged by the sink after {:>6.0} ms ({:>6.0} events/s); {dups} duplicates",
            codec.as_str(),
            posted.as_secs_f64() * 1000.0,
            delivered.as_secs_f64() * 1000.0,
            EVENTS as f64 / delivered.as_secs_f64()
        );
        assert_eq!(p.stop(), 0);
    }
}

/// Figures for PERFORMANCE.md, not a check: events/s the Kafka sink sustains
/// through the binary against tansu, per codec. Run in release:
/// `cargo test --release --test kafka_tansu_e2e -- --ignored --nocapture figures`.
#[test]
#[ignore]
fn figures_kafka_events_per_second() {
    const N: u64 = 100_000;
    let Some(bin) = tansu_or_skip("figures_kafka_events_per_second") else {
        return;
    };
    let broker = Tansu::start(bin);
    for (k, codec) in Compression::ALL.into_iter().enumerate() {
        let topic = format!("trackgate-figures-{}", codec.as_str());
        broker.create_topic(&topic, 3);
        let dir = TempDir::new("kafka-figures");
        let data = dir.path().join("data").display().to_string();
        let brokers = broker.brokers();
        let p = Proc::start(&[
            ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
            ("OUTPUTS", "kafka"),
            ("KAFKA_BROKERS", &brokers),
            ("KAFKA_TOPIC", &topic),
            ("KAFKA_COMPRESSION", codec.as_str()),
            ("DATA_DIR", &data),
            ("METRICS_ENABLED", "true"),
            ("METRICS_ADDR", "127.0.0.1:0"),
        ]);
        let tok = token(p.addr);
        let maddr = p.metrics_addr();
        let series = r#"trackgate_sink_events_acknowledged_total{sink="kafka"}"#;
        // Warm-up: the connection and the topic's metadata.
        post_many(p.addr, &tok, (k as u64) << 40, 100, 1, 100);
        wait_metric(maddr, series, 100.0, Duration::from_secs(30));
        let t0 = Instant::now();
        let (acked, _) = post_many(p.addr, &tok, ((k as u64) << 40) + 1000, N, 8, 100);
        let posted = t0.elapsed();
        assert_eq!(acked.len() as u64, N, "{}", p.logs());
        let got = wait_metric(maddr, series, (N + 100) as f64, Duration::from_secs(300));
        let took = t0.elapsed();
        assert_eq!(got, (N + 100) as f64, "{}", p.logs());
        eprintln!(
            "FIGURE kafka sink -> tansu, {:<6}: {N} events posted in {:.2} s, all acknowledged after {:.2} s = {:.0} events/s",
            codec.as_str(),
            posted.as_secs_f64(),
            took.as_secs_f64(),
            N as f64 / took.as_secs_f64()
        );
        assert_eq!(p.stop(), 0);
    }
}

/// `kill -9` under load with `ACK_MODE=durable` and `OUTPUTS=log,kafka`:
/// after the restart every event that got a 202 is on the topic (and in the
/// log), duplicates allowed.
#[test]
fn kill_9_under_load_loses_no_acknowledged_event_on_the_topic() {
    let Some(bin) = tansu_or_skip("kill_9_under_load_loses_no_acknowledged_event_on_the_topic")
    else {
        return;
    };
    let broker = Tansu::start(bin);
    let topic = "trackgate-kill9";
    broker.create_topic(topic, 3);
    let brokers = broker.brokers();
    let dir = TempDir::new("kafka-kill9");
    let data = dir.path().join("data").display().to_string();
    let log = dir.path().join("events.ndjson");
    let log_path = log.display().to_string();
    let env: Vec<(&str, &str)> = vec![
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("OUTPUTS", "log,kafka"),
        ("ACK_MODE", "durable"),
        ("CORES", "2"),
        ("KAFKA_BROKERS", &brokers),
        ("KAFKA_TOPIC", topic),
        ("KAFKA_CONFIG", "linger.ms=5"),
        ("DATA_DIR", &data),
        ("LOG_PATH", &log_path),
    ];
    let p = Proc::start(&env);
    let load = Load::start(p.addr, &token(p.addr), 4);
    std::thread::sleep(Duration::from_millis(2000));
    p.signal(libc::SIGKILL);
    let (acked, _) = load.finish();
    drop(p);
    assert!(acked.len() > 100, "too little load: {}", acked.len());

    let p = Proc::start(&env);
    let (_, missing, dups) = acked_records(&brokers, topic, &acked, Duration::from_secs(120));
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events missing from the topic after kill -9: {}",
        missing.len(),
        acked.len(),
        p.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_log = loop {
        let in_log: HashSet<String> = read_events(&log)
            .iter()
            .filter_map(|e| e["event_id"].as_str().map(str::to_string))
            .collect();
        if acked.is_subset(&in_log) || Instant::now() > deadline {
            break in_log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(acked.difference(&in_log).count(), 0, "missing from the log");
    eprintln!(
        "kill -9 under load (log,kafka): {} acknowledged, all on the topic after the restart ({dups} duplicates)",
        acked.len()
    );
    assert_eq!(p.stop(), 0);
}
