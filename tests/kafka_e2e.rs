//! End-to-end: the real binary with `OUTPUTS=log,kafka` producing to
//! librdkafka's mock cluster (run in this test process, reached over
//! loopback). The brokers go down for longer than `message.timeout.ms`
//! while collect requests keep being acknowledged from the journal; once
//! they are back, every event that got a 202 is on the topic, with its key
//! and headers.

mod common;
mod kafka_support;

use common::sinks::*;
use common::*;
use kafka_support::{check_records, consume_all, tally};
use rdkafka::mocking::MockCluster;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

const TOPIC: &str = "gotrack.events";
const BROKERS: i32 = 3;

/// Posts `n` events in batches of 10 from id `from`; the ids that got a 202.
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

    let mut acked = post(p.addr, &token, 0, 1000);
    assert_eq!(acked.len(), 1000, "{}", p.logs());
    for b in 1..=BROKERS {
        c.broker_down(b).expect("broker down");
    }
    acked.extend(post(p.addr, &token, 1000, 1000));
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
    acked.extend(post(p.addr, &token, 2000, 500));
    assert_eq!(acked.len(), 2500);

    let ids: Vec<String> = acked.iter().cloned().collect();
    let got = consume_all(&brokers, TOPIC, &ids, 0, Duration::from_secs(90));
    let ours: Vec<_> = got
        .into_iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| acked.contains(k)))
        .collect();
    check_records(&ours);
    let (missing, dups) = tally(&ours, &ids);
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing from the topic: {}",
        missing.len(),
        p.logs()
    );
    eprintln!(
        "kafka e2e: {} records for {} acknowledged events, {dups} duplicates",
        ours.len(),
        ids.len()
    );
    assert_eq!(p.stop(), 0);
}
