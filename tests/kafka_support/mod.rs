//! Shared by the Kafka tests: events shaped like trackgate's, and a consumer
//! that reads a whole topic back (every partition from the beginning up to
//! its high watermark, with `assign()`: no consumer-group join to wait for).
#![allow(dead_code)]

pub mod tansu;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// `n` events as trackgate encodes them (one JSON object each, no newline),
/// with their event_ids.
pub fn events(n: usize, tag: &str) -> (Vec<Vec<u8>>, Vec<String>) {
    let mut bodies = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = uuid::Uuid::now_v7().to_string();
        let (ty, source) = match i % 3 {
            0 => ("pageview", "pixel"),
            1 => ("click", "collect"),
            _ => ("signup", "server"),
        };
        bodies.push(
            format!(
                "{{\"event_id\":\"{id}\",\"type\":\"{ty}\",\"source\":\"{source}\",\
                 \"ts\":\"2026-11-30T12:00:00.000Z\",\"url\":\"https://shop.example/{tag}/{i}\",\
                 \"props\":{{\"n\":{i},\"tag\":\"{tag}\"}}}}"
            )
            .into_bytes(),
        );
        ids.push(id);
    }
    (bodies, ids)
}

/// One record read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Record {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(hk, _)| hk == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `topic` from the beginning of every partition until each of
/// `expected` event_ids and at least `at_least` records have been seen,
/// then until nothing new arrives for a second (to count duplicates).
/// Panics after `limit`.
///
/// It does not stop at the high watermarks: tansu 0.6 reports a high
/// watermark that lags the records it already serves (the last batch or so).
pub fn consume_all(
    brokers: &str,
    topic: &str,
    expected: &[String],
    at_least: usize,
    limit: Duration,
) -> Vec<Record> {
    consume_all_with(brokers, &[], topic, expected, at_least, limit)
}

/// [`consume_all`] with extra client properties (TLS settings).
pub fn consume_all_with(
    brokers: &str,
    props: &[(&str, &str)],
    topic: &str,
    expected: &[String],
    at_least: usize,
    limit: Duration,
) -> Vec<Record> {
    let mut config = ClientConfig::new();
    for (k, v) in props {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", brokers)
        .set("group.id", "trackgate-test-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    let started = Instant::now();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("assignment");
    }
    consumer.assign(&tpl).expect("assign");

    let mut want: HashSet<&str> = expected.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(expected.len());
    let mut last_new = Instant::now();
    while !want.is_empty() || out.len() < at_least || last_new.elapsed() < Duration::from_secs(1) {
        assert!(
            started.elapsed() < limit,
            "{} of {} event_ids not on {topic} after {limit:?} ({} records read)",
            want.len(),
            expected.len(),
            out.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => panic!("consumer error: {e}"),
            Some(Ok(m)) => {
                last_new = Instant::now();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|hd| {
                                (
                                    hd.key.to_string(),
                                    String::from_utf8_lossy(hd.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                if let Some(k) = key.as_deref() {
                    want.remove(k);
                }
                out.push(Record {
                    key,
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
    }
    out
}

/// What a topic holds for the expected ids: `(missing ids, duplicates)`.
pub fn tally(records: &[Record], ids: &[String]) -> (Vec<String>, usize) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in records {
        if let Some(k) = r.key.as_deref() {
            *seen.entry(k).or_default() += 1;
        }
    }
    let missing = ids
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .cloned()
        .collect();
    let dups = seen.values().map(|c| c.saturating_sub(1)).sum();
    (missing, dups)
}

/// Checks that every record's key, value and headers agree with its event.
pub fn check_records(records: &[Record]) {
    for r in records {
        let v: serde_json::Value =
            serde_json::from_slice(&r.value).expect("value is the event JSON");
        assert_eq!(r.key.as_deref(), v["event_id"].as_str(), "key = event_id");
        assert_eq!(
            r.header("event_type"),
            v["type"].as_str(),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("source"), v["source"].as_str(), "{:?}", r.headers);
        assert_eq!(r.header("schema"), Some("v1"), "{:?}", r.headers);
        assert_eq!(r.headers.len(), 3, "{:?}", r.headers);
    }
}

/// Reads `topic` back and keeps the records of the `acked` events (other
/// tests' events may share the topic), their records checked
/// ([`check_records`]); returns those records, the acknowledged ids
/// missing from the topic, and the duplicates.
pub fn acked_records(
    brokers: &str,
    topic: &str,
    acked: &HashSet<String>,
    limit: Duration,
) -> (Vec<Record>, Vec<String>, usize) {
    let ids: Vec<String> = acked.iter().cloned().collect();
    let ours: Vec<Record> = consume_all(brokers, topic, &ids, 0, limit)
        .into_iter()
        .filter(|r| r.key.as_deref().is_some_and(|k| acked.contains(k)))
        .collect();
    check_records(&ours);
    let (missing, dups) = tally(&ours, &ids);
    (ours, missing, dups)
}
