//! Unit tests of the Kafka downstream that need no broker (the fault tests
//! against the mock cluster and the tansu broker are in `tests/kafka_*.rs`).

use super::*;
use rdkafka::message::Headers;

#[test]
fn record_meta_reads_key_and_header_fields() {
    let ev = br#"{"event_id":"0190a1b2-0000-7000-8000-000000000001","type":"click","source":"collect","ts":"2026-11-30T12:00:00Z","props":{"type":"nested"}}"#;
    let m = RecordMeta::of(ev);
    assert_eq!(
        m.event_id.as_deref(),
        Some("0190a1b2-0000-7000-8000-000000000001")
    );
    assert_eq!(m.event_type.as_deref(), Some("click"));
    assert_eq!(m.source.as_deref(), Some("collect"));
    let h = m.headers();
    let got: Vec<(&str, &[u8])> = h
        .iter()
        .map(|x| (x.key, x.value.unwrap_or_default()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("event_type", &b"click"[..]),
            ("schema", &b"v1"[..]),
            ("source", &b"collect"[..])
        ]
    );
}

#[test]
fn record_meta_of_a_malformed_event_is_empty_but_keeps_the_schema_header() {
    let m = RecordMeta::of(b"{not json");
    assert_eq!(m, RecordMeta::default());
    assert_eq!(m.headers().count(), 1);
    let m = RecordMeta::of(br#"{"event_id":42,"type":"x"}"#);
    assert_eq!(m.event_id, None);
    assert_eq!(m.event_type.as_deref(), Some("x"));
}

#[test]
fn new_refuses_an_unknown_librdkafka_property_and_empty_brokers() {
    let mut cfg = KafkaConfig::with_brokers("127.0.0.1:9");
    cfg.extra = vec![("linger.mss".into(), "5".into())];
    let e = KafkaSink::new(cfg).unwrap_err();
    assert_eq!(e.kind(), SinkFailure::Open);
    assert!(e.to_string().contains("linger.mss"), "{e}");
    assert!(e.to_string().contains("KAFKA_CONFIG"), "{e}");
    let e = KafkaSink::new(KafkaConfig::with_brokers("")).unwrap_err();
    assert!(e.to_string().contains("KAFKA_BROKERS"), "{e}");
}

#[test]
fn error_kinds_separate_connection_from_refusal() {
    let undelivered = |code| KafkaError::Undelivered {
        failed: 1,
        total: 2,
        first: Box::new(RdError::MessageProduction(code)),
        broker: String::new(),
        topic: "t".into(),
        timeout_ms: 1000,
    };
    let timed_out = undelivered(RDKafkaErrorCode::MessageTimedOut);
    assert!(timed_out.is_connection());
    assert!(timed_out.to_string().contains("message.timeout.ms=1000"));
    let too_big = undelivered(RDKafkaErrorCode::MessageSizeTooLarge);
    assert_eq!(too_big.kind(), SinkFailure::Rejected);
    assert!(!too_big.is_connection());
    assert_eq!(
        undelivered(RDKafkaErrorCode::NotEnoughReplicas).kind(),
        SinkFailure::Write
    );
}

#[test]
fn only_refusals_of_one_record_are_poison() {
    let code = |c| RdError::MessageProduction(c);
    for c in [
        RDKafkaErrorCode::MessageSizeTooLarge,
        RDKafkaErrorCode::MessageBatchTooLarge,
        RDKafkaErrorCode::InvalidRecord,
        RDKafkaErrorCode::InvalidTimestamp,
    ] {
        assert!(is_poison(&code(c)), "{c:?}");
    }
    // About the topic or the producer (every event would be dead), or fixed
    // by producing again.
    for c in [
        RDKafkaErrorCode::TopicAuthorizationFailed,
        RDKafkaErrorCode::ClusterAuthorizationFailed,
        RDKafkaErrorCode::UnknownTopic,
        RDKafkaErrorCode::UnknownTopicOrPartition,
        RDKafkaErrorCode::InvalidTopic,
        RDKafkaErrorCode::InvalidMessage,
        RDKafkaErrorCode::MessageTimedOut,
        RDKafkaErrorCode::NotEnoughReplicas,
        RDKafkaErrorCode::OutOfOrderSequenceNumber,
    ] {
        assert!(!is_poison(&code(c)), "{c:?}");
    }
}

#[test]
fn every_sasl_mechanism_is_built_in() {
    for mechanism in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        let mut cfg = KafkaConfig::with_brokers("127.0.0.1:9");
        cfg.sasl = Some(Sasl {
            mechanism,
            user: "trackgate".into(),
            password: "not-a-real-password".into(),
        });
        let sink = KafkaSink::new(cfg);
        assert!(sink.is_ok(), "{mechanism:?}: {:?}", sink.err());
    }
}

#[test]
fn a_ca_file_that_is_not_pem_fails_at_start_not_at_first_delivery() {
    let ca = std::env::temp_dir().join(format!("tg-kafka-bad-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, "this is not a certificate").unwrap();
    let mut cfg = KafkaConfig::with_brokers("127.0.0.1:9");
    cfg.tls_ca = Some(ca.clone());
    let e = KafkaSink::new(cfg).unwrap_err();
    let _ = std::fs::remove_file(&ca);
    assert_eq!(e.kind(), SinkFailure::Open);
    assert!(e.to_string().contains("ssl.ca.location"), "{e}");
    assert!(e.to_string().contains("check KAFKA_TLS_CA"), "{e}");
}
