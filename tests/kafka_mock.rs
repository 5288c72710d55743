//! Kafka faults against librdkafka's mock cluster (`rdkafka::mocking`): the
//! brokers go down for longer than `message.timeout.ms`, or answer produce
//! requests with errors. The rule under test: `deliver` says `Ok` only when
//! every record has a successful delivery report, so delivering again after
//! an `Err` (what the journal runner does) leaves every event_id on the topic.

mod kafka_support;

use kafka_support::{check_records, consume_all, events, tally};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::sync::Arc;
use std::time::Duration;
use trackgate::metrics::labels::SinkFailure;
use trackgate::metrics::sinks::SinkStats;
use trackgate::sink::kafka::{KafkaConfig, KafkaSink};

const TOPIC: &str = "gotrack.events";
const BROKERS: i32 = 3;

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(BROKERS).expect("mock cluster");
    c.create_topic(TOPIC, 4, 3).expect("topic");
    c
}

fn sink(brokers: &str, timeout_ms: u64) -> KafkaSink {
    let mut cfg = KafkaConfig::with_brokers(brokers);
    cfg.extra = vec![
        ("message.timeout.ms".into(), timeout_ms.to_string()),
        ("linger.ms".into(), "5".into()),
        ("reconnect.backoff.max.ms".into(), "200".into()),
    ];
    KafkaSink::new(cfg, Arc::new(SinkStats::default())).expect("sink")
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(Vec::as_slice).collect()
}

/// Delivers like the runner: again after each `Err`, at most `tries` times.
/// Returns the errors seen.
fn deliver_until_ok(sink: &mut KafkaSink, batch: &[&[u8]], tries: usize) -> Vec<String> {
    let mut errors = Vec::new();
    for _ in 0..tries {
        match sink.deliver(batch) {
            Ok(d) => {
                assert_eq!(d.written, batch.len() as u64);
                return errors;
            }
            Err(e) => {
                errors.push(e.to_string());
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    panic!("no successful delivery in {tries} tries: {errors:#?}");
}

#[test]
fn sink_builds_without_any_broker() {
    // Nothing listens on port 9: construction must still succeed.
    let s = sink("127.0.0.1:9", 500);
    assert_eq!(s.message_timeout(), Duration::from_millis(500));
}

#[test]
fn brokers_down_past_the_message_timeout_then_up_loses_nothing() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    let mut s = sink(&brokers, 1500);

    let (before, before_ids) = events(500, "before");
    assert_eq!(s.deliver(&refs(&before)).expect("brokers up").written, 500);

    for b in 1..=BROKERS {
        c.broker_down(b).expect("broker down");
    }
    let (during, during_ids) = events(2000, "during");
    let batch = refs(&during);
    let err = s
        .deliver(&batch)
        .expect_err("no broker is up: deliver must not say Ok");
    assert!(err.is_connection(), "{err}");
    assert_eq!(err.kind(), SinkFailure::Connect, "{err}");
    assert!(err.to_string().contains("KAFKA_BROKERS"), "{err}");
    // Still down: a second attempt fails again, it is not silently queued.
    assert!(s.deliver(&batch[..10]).is_err());

    for b in 1..=BROKERS {
        c.broker_up(b).expect("broker up");
    }
    let errors = deliver_until_ok(&mut s, &batch, 20);
    let (after, after_ids) = events(500, "after");
    deliver_until_ok(&mut s, &refs(&after), 5);

    let all: Vec<String> = [before_ids, during_ids, after_ids].concat();
    let got = consume_all(&brokers, TOPIC, &all, 0, Duration::from_secs(60));
    check_records(&got);
    let (missing, dups) = tally(&got, &all);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    eprintln!(
        "brokers down/up: {} records for {} events, {dups} duplicates, {} failed attempts after the brokers came back",
        got.len(),
        all.len(),
        errors.len()
    );
}

#[test]
fn produce_request_errors_are_retried_or_reported_never_lost() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    let mut s = sink(&brokers, 3000);
    let (warm, warm_ids) = events(10, "warm");
    deliver_until_ok(&mut s, &refs(&warm), 5);

    // Retriable errors and a dropped connection: librdkafka retries them
    // (idempotently) and the delivery still succeeds.
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ],
    );
    let (retried, retried_ids) = events(1000, "retried");
    deliver_until_ok(&mut s, &refs(&retried), 10);

    // A refusal no retry fixes: deliver must say Err (never Ok), with the
    // kind the metrics count and the operator message.
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 64],
    );
    let (refused, refused_ids) = events(200, "refused");
    let batch = refs(&refused);
    let err = s.deliver(&batch).expect_err("authorization failure");
    assert_eq!(err.kind(), SinkFailure::Rejected, "{err}");
    assert!(err.to_string().contains("ACLs"), "{err}");

    // Once the broker accepts again, the redelivery lands every event.
    c.clear_request_errors(RDKafkaApiKey::Produce);
    deliver_until_ok(&mut s, &batch, 10);

    let all: Vec<String> = [warm_ids, retried_ids, refused_ids].concat();
    let got = consume_all(&brokers, TOPIC, &all, 0, Duration::from_secs(60));
    check_records(&got);
    let (missing, dups) = tally(&got, &all);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    eprintln!(
        "request errors: {} records for {} events, {dups} duplicates",
        got.len(),
        all.len()
    );
}

#[test]
fn an_event_without_event_id_is_produced_not_stalled() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    let mut s = sink(&brokers, 3000);
    let odd: &[u8] = br#"{"type":"pageview","ts":"2026-11-30T12:00:00Z"}"#;
    let not_json: &[u8] = b"not json";
    deliver_until_ok(&mut s, &[odd, not_json], 5);
    let got = consume_all(&brokers, TOPIC, &[], 2, Duration::from_secs(30));
    assert_eq!(got.len(), 2);
    let first = got.iter().find(|r| r.value == odd).expect("event");
    assert_eq!(first.key, None);
    assert_eq!(first.header("event_type"), Some("pageview"));
    assert_eq!(first.header("schema"), Some("v1"));
    assert_eq!(first.header("source"), None);
}

#[test]
fn a_producer_with_a_fatal_error_is_rebuilt_and_the_events_delivered() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    // The idempotent producer cannot get its producer id: librdkafka calls
    // that fatal, and the producer refuses everything from then on.
    c.request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let mut s = sink(&brokers, 3000);
    let (evs, ids) = events(50, "fatal");
    let batch = refs(&evs);
    let err = s.deliver(&batch).expect_err("fatal producer error");
    assert_eq!(err.kind(), SinkFailure::Write, "{err}");
    assert!(err.to_string().contains("fatal error"), "{err}");
    let errors = deliver_until_ok(&mut s, &batch, 5);
    let got = consume_all(&brokers, TOPIC, &ids, 0, Duration::from_secs(30));
    check_records(&got);
    let (missing, dups) = tally(&got, &ids);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    eprintln!(
        "fatal: {dups} duplicates, {} more failed attempts",
        errors.len()
    );
}

#[test]
fn deliver_until_gives_up_at_the_callers_deadline_and_loses_nothing() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    // A long message.timeout.ms: only the caller's deadline can end the wait.
    let mut s = sink(&brokers, 60_000);
    for b in 1..=BROKERS {
        c.broker_down(b).expect("broker down");
    }
    let (evs, ids) = events(300, "shutdown");
    let batch = refs(&evs);
    let started = std::time::Instant::now();
    let err = s
        .deliver_until(&batch, Some(started + Duration::from_millis(300)))
        .expect_err("no broker is up");
    // Far below the 60 s message timeout: the deadline ended the wait.
    assert!(started.elapsed() < Duration::from_secs(30), "{err}");
    assert_eq!(err.kind(), SinkFailure::Connect, "{err}");
    for b in 1..=BROKERS {
        c.broker_up(b).expect("broker up");
    }
    deliver_until_ok(&mut s, &batch, 10);
    let got = consume_all(&brokers, TOPIC, &ids, 0, Duration::from_secs(60));
    check_records(&got);
    let (missing, dups) = tally(&got, &ids);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    eprintln!("deadline: {} records, {dups} duplicates", got.len());
}
