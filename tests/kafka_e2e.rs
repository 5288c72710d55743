//! End-to-end: the real binary with `OUTPUTS=log,kafka` producing to
//! librdkafka's mock cluster (run in this test process, reached over
//! loopback). The brokers go down for longer than `message.timeout.ms`
//! while collect requests keep being acknowledged from the journal; once
//! they are back, every event that got a 202 is on the topic, with its key
//! and headers. And a poison event (over `message.max.bytes`) goes to the
//! dead-letter file without stalling the events behind it.

mod common;
mod kafka_support;

use common::sinks::*;
use common::*;
use kafka_support::{acked_records, check_records, consume_all, tally};
use rdkafka::mocking::MockCluster;
use std::time::Duration;

const TOPIC: &str = "gotrack.events";
const BROKERS: i32 = 3;

#[test]
fn brokers_down_past_the_message_timeout_lose_no_acknowledged_event() {
    let c = MockCluster::new(BROKERS).expect("mock cluster");
    c.create_topic(TOPIC, 4, 3).expect("topic");
    let brokers = c.bootstrap_servers();
    let dir = TempDir::new("kafka-e2e");
    let data = dir.path().join("data").display().to_string();
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("OUTPUTS", "log,kafka"),
        ("KAFKA_BROKERS", &brokers),
        (
            "KAFKA_CONFIG",
            "message.timeout.ms=1500,linger.ms=5,reconnect.backoff.max.ms=200",
        ),
        ("DATA_DIR", &data),
    ]);
    let token = token(p.addr);

    let mut acked = post_one_by_one(p.addr, &token, 0, 1000);
    assert_eq!(acked.len(), 1000, "{}", p.logs());
    for b in 1..=BROKERS {
        c.broker_down(b).expect("broker down");
    }
    acked.extend(post_one_by_one(p.addr, &token, 1000, 1000));
    assert_eq!(acked.len(), 2000, "the journal acknowledges: {}", p.logs());
    // Longer than message.timeout.ms: librdkafka gives the records up and
    // the sink must deliver them again from the journal.
    assert!(
        p.wait_log(&["sink delivery failed", "kafka"], Duration::from_secs(10))
            .is_some(),
        "{}",
        p.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    for b in 1..=BROKERS {
        c.broker_up(b).expect("broker up");
    }
    acked.extend(post_one_by_one(p.addr, &token, 2000, 500));
    assert_eq!(acked.len(), 2500);

    let (ours, missing, dups) = acked_records(&brokers, TOPIC, &acked, Duration::from_secs(90));
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing from the topic: {}",
        missing.len(),
        p.logs()
    );
    eprintln!(
        "kafka e2e: {} records for {} acknowledged events, {dups} duplicates",
        ours.len(),
        acked.len()
    );
    assert_eq!(p.stop(), 0);
}

/// An event larger than the producer's `message.max.bytes`, through the
/// binary: it goes to `KAFKA_DEAD_LETTER` and is counted in
/// `sink_events_dead_lettered_total{sink="kafka"}`; the events posted with it
/// and after it reach the topic, and `/readyz` stays ready.
#[test]
fn a_poison_event_is_dead_lettered_and_the_sink_keeps_delivering() {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(TOPIC, 2, 1).expect("topic");
    let brokers = c.bootstrap_servers();
    let dir = TempDir::new("kafka-e2e-poison");
    let data = dir.path().join("data").display().to_string();
    let dead = dir.path().join("kafka.dead.ndjson");
    let p = Proc::start(&[
        ("FORWARD_DESTINATION", "http://127.0.0.1:9"),
        ("OUTPUTS", "kafka"),
        ("KAFKA_BROKERS", &brokers),
        (
            "KAFKA_CONFIG",
            "message.timeout.ms=3000,linger.ms=5,message.max.bytes=2000",
        ),
        ("KAFKA_DEAD_LETTER", &dead.display().to_string()),
        ("DATA_DIR", &data),
        ("METRICS_ENABLED", "true"),
        ("METRICS_ADDR", "127.0.0.1:0"),
    ]);
    let token = token(p.addr);
    let mut acked = post_one_by_one(p.addr, &token, 0, 100);
    let poison = event_id(100);
    let (status, _) = send(
        p.addr,
        &collect_req(&token, std::slice::from_ref(&poison), 3000),
    )
    .expect("answer");
    assert_eq!(status, 202, "{}", p.logs());
    acked.extend(post_one_by_one(p.addr, &token, 101, 100));
    assert_eq!(acked.len(), 200, "{}", p.logs());

    let ids: Vec<String> = acked.iter().cloned().collect();
    let got = consume_all(&brokers, TOPIC, &ids, 0, Duration::from_secs(60));
    check_records(&got);
    assert!(!got
        .iter()
        .any(|r| r.key.as_deref() == Some(poison.as_str())));
    let (missing, _) = tally(&got, &ids);
    assert!(
        missing.is_empty(),
        "{} missing: {}",
        missing.len(),
        p.logs()
    );

    let lines = std::fs::read_to_string(&dead).expect("dead-letter file");
    let lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0]["event"].as_str().unwrap_or("").contains(&poison));
    assert!(lines[0]["error"]
        .as_str()
        .unwrap_or("")
        .contains("MessageSizeTooLarge"));
    let series = r#"trackgate_sink_events_dead_lettered_total{sink="kafka"}"#;
    let maddr = p.metrics_addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metric(&scrape(maddr), series) != Some(1.0) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = scrape(maddr);
    assert_eq!(metric(&text, series), Some(1.0), "{text}");
    assert_eq!(get(p.addr, "/readyz").status, 200, "{}", p.logs());
    assert_eq!(p.stop(), 0);
}
