//! Kafka faults against librdkafka's mock cluster (`rdkafka::mocking`): the
//! brokers go down for longer than `message.timeout.ms`, or answer produce
//! requests with errors. The rule under test: `deliver` says `Ok` only when
//! every record has a successful delivery report, so delivering again after
//! an `Err` (what the journal runner does) leaves every event_id on the topic.

mod kafka_support;

use kafka_support::{check_records, consume_all, events, tally};
use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::time::Duration;
use trackgate::metrics::labels::SinkFailure;
use trackgate::sink::kafka::{KafkaConfig, KafkaSink};

const TOPIC: &str = "gotrack.events";
const BROKERS: i32 = 3;

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let c = MockCluster::new(BROKERS).expect("mock cluster");
    c.create_topic(TOPIC, 4, 3).expect("topic");
    c
}

fn sink(brokers: &str, timeout_ms: u64) -> KafkaSink {
    sink_with(brokers, timeout_ms, &[], &dead_letter_path())
}

fn sink_with(
    brokers: &str,
    timeout_ms: u64,
    extra: &[(&str, &str)],
    dead_letter: &std::path::Path,
) -> KafkaSink {
    let mut cfg = KafkaConfig::with_brokers(brokers);
    cfg.extra = vec![
        ("message.timeout.ms".into(), timeout_ms.to_string()),
        ("linger.ms".into(), "5".into()),
        ("reconnect.backoff.max.ms".into(), "200".into()),
    ];
    cfg.extra
        .extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    cfg.dead_letter = dead_letter.to_path_buf();
    KafkaSink::new(cfg).expect("sink")
}

/// A dead-letter file path of this test process (not created).
fn dead_letter_path() -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "trackgate-kafka-dead-{}-{n}.ndjson",
        std::process::id()
    ))
}

/// The dead-letter file's lines as (error, event) pairs (none when absent).
fn dead_letters(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("dead-letter line is JSON");
            assert_eq!(v["topic"], TOPIC, "{l}");
            assert!(v["dead_lettered_at"].as_str().is_some(), "{l}");
            (
                v["error"].as_str().expect("error").to_string(),
                v["event"].as_str().expect("event").as_bytes().to_vec(),
            )
        })
        .collect()
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
    // A refusal of the whole topic is not a poison event: nothing is
    // dead-lettered, the events wait in the journal.
    assert_eq!(dead_letters(&s.config().dead_letter), vec![]);

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

/// Events larger than the producer's `message.max.bytes` are refused by
/// librdkafka before they reach a broker, on every attempt. They go to the
/// dead-letter file with the error; the others are delivered in the same
/// call.
#[test]
fn an_event_over_message_max_bytes_is_dead_lettered_and_the_rest_delivered() {
    let c = cluster();
    let brokers = c.bootstrap_servers();
    let path = dead_letter_path();
    let mut s = sink_with(&brokers, 3000, &[("message.max.bytes", "2000")], &path);
    let (mut evs, mut ids) = events(300, "small");
    let (big, big_ids) = events(2, "big");
    let pad = "x".repeat(4000);
    for (n, (mut b, id)) in big.into_iter().zip(big_ids).enumerate() {
        b.truncate(b.len() - 1);
        b.extend_from_slice(format!(",\"pad\":\"{pad}\"}}").as_bytes());
        let at = 100 + n * 100;
        evs.insert(at, b);
        ids.insert(at, id);
    }
    let batch = refs(&evs);
    let d = s
        .deliver(&batch)
        .expect("the big events must not stall the rest");
    assert_eq!((d.written, d.dead_lettered), (300, 2), "{d:?}");
    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 2);
    for (k, (error, event)) in dead.iter().enumerate() {
        assert_eq!(event, &evs[100 + k * 100], "the dead event, verbatim");
        assert!(error.contains("MessageSizeTooLarge"), "{error}");
    }
    // Delivered again (a replay after a restart): the same two are refused
    // again, nothing stalls.
    let d = s.deliver(&batch).expect("replay");
    assert_eq!((d.written, d.dead_lettered), (300, 2), "{d:?}");
    let small: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 100 && *i != 200)
        .map(|(_, id)| id.clone())
        .collect();
    let got = consume_all(&brokers, TOPIC, &small, 0, Duration::from_secs(60));
    check_records(&got);
    let (missing, _) = tally(&got, &small);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    assert!(
        !got.iter()
            .any(|r| r.key.as_deref() == Some(ids[100].as_str())),
        "a refused event is not on the topic"
    );
    let _ = std::fs::remove_file(&path);
}

/// A broker that refuses produce requests as too large (the topic's
/// max.message.bytes): librdkafka fails the whole request, so the events
/// that shared it are produced again in halves until the refused one is
/// alone. The injected errors are consumed one per produce request, in
/// order: the first request (all events) and the second (the first half's
/// first half, and so on down to event 0 alone) fail; everything else goes
/// through.
#[test]
fn a_request_refused_as_too_large_is_bisected_to_the_one_event() {
    let c = MockCluster::new(1).expect("mock cluster");
    c.create_topic(TOPIC, 1, 1).expect("topic");
    let brokers = c.bootstrap_servers();
    let path = dead_letter_path();
    let mut s = sink_with(&brokers, 3000, &[("linger.ms", "50")], &path);
    let (warm, warm_ids) = events(5, "warm");
    deliver_until_ok(&mut s, &refs(&warm), 5);

    let (evs, ids) = events(8, "bisect");
    let batch = refs(&evs);
    // 8 events: [0..8] fails, then [0..4] fails, [0..2] fails, [0] fails:
    // four refusals isolate event 0; [1], [2..4], [4..8] go through.
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 4],
    );
    let d = s.deliver(&batch).expect("bisected, not stalled");
    assert_eq!((d.written, d.dead_lettered), (7, 1), "{d:?}");
    let dead = dead_letters(&path);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, evs[0]);
    assert!(dead[0].0.contains("MessageSizeTooLarge"), "{}", dead[0].0);

    // One refused request and nothing else: its events are innocent
    // neighbours, all delivered, none dead-lettered.
    let (more, more_ids) = events(100, "neighbours");
    c.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let d = s.deliver(&refs(&more)).expect("neighbours delivered");
    assert_eq!((d.written, d.dead_lettered), (100, 0), "{d:?}");
    assert_eq!(dead_letters(&path).len(), 1);

    let expect: Vec<String> = [warm_ids, ids[1..].to_vec(), more_ids].concat();
    let got = consume_all(&brokers, TOPIC, &expect, 0, Duration::from_secs(60));
    check_records(&got);
    let (missing, _) = tally(&got, &expect);
    assert!(missing.is_empty(), "{} event_ids missing", missing.len());
    let _ = std::fs::remove_file(&path);
}
