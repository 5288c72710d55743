//! A private, throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl`
//! from `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package; the
//! newest version found wins, `TRACKGATE_PG_BIN` names another directory)
//! in a temporary directory, listening on 127.0.0.1 at a random port and on
//! a unix socket inside that directory, trust authentication, superuser
//! `trackgate`. Never a system service. Dropping the value stops the server
//! and deletes the directory.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does),
//! the server programs run as the unprivileged user `postgres` (created by
//! the Debian package; `TRACKGATE_PG_USER` names another) through
//! `runuser`, and the directory is handed to that user.
//!
//! Uses only `std` and `libc` so that end-to-end tests in `tests/` can
//! include this file with `#[path]`. Failures panic with the server's log:
//! this is test code.

#![allow(dead_code)] // Each including crate uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The superuser `initdb` creates; every DSN connects as it.
pub const USER: &str = "trackgate";

/// One running (or stopped) cluster.
#[derive(Debug)]
pub struct TestCluster {
    root: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The user the server programs run as, when we are root.
    run_as: Option<String>,
}

static SHARED: Mutex<Weak<TestCluster>> = Mutex::new(Weak::new());

impl TestCluster {
    /// A cluster shared by the tests of this process that do not stop it:
    /// started on first use, stopped when the last user drops its handle.
    /// Tests keep apart by using their own tables or databases.
    pub fn shared() -> Arc<TestCluster> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.upgrade() {
            return c;
        }
        let c = Arc::new(TestCluster::start());
        *slot = Arc::downgrade(&c);
        c
    }

    /// Creates and starts a new cluster of its own (for tests that stop it).
    pub fn start() -> TestCluster {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir();
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(std::env::var("TRACKGATE_PG_USER").unwrap_or_else(|_| "postgres".into()))
        } else {
            None
        };
        let root = std::env::temp_dir().join(format!(
            "trackgate-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let socket_dir = root.join("sock");
        std::fs::create_dir_all(&socket_dir).expect("create the cluster's temporary directory");
        if let Some(user) = &run_as {
            let (uid, gid) = user_ids(user);
            for dir in [&root, &socket_dir] {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                    .expect("hand the cluster directory to the server's user");
            }
        }
        let mut cluster = TestCluster {
            data: root.join("data"),
            log: root.join("server.log"),
            socket_dir,
            root,
            bin,
            port: 0,
            run_as,
        };
        let data = cluster.data.to_string_lossy().into_owned();
        let out = cluster.server_cmd(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        check(&out, "initdb", &cluster.log);
        // A random free port; another process may take it before the server
        // binds, so try a few.
        for attempt in 0.. {
            cluster.port = free_port();
            if cluster.try_start() {
                break;
            }
            assert!(
                attempt < 4,
                "the test PostgreSQL server did not start; its log:\n{}",
                cluster.log_tail()
            );
        }
        cluster
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A key/value DSN for database `dbname` over TCP.
    pub fn dsn(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={dbname} connect_timeout=5",
            self.port
        )
    }

    /// A key/value DSN for database `dbname` over the unix socket.
    pub fn socket_dsn(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={USER} dbname={dbname}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// The directory for files a test wants deleted with the cluster.
    pub fn scratch(&self) -> &Path {
        &self.root
    }

    /// Runs `sql` with psql (unaligned, tuples only) and returns its output.
    pub fn psql(&self, dbname: &str, sql: &str) -> String {
        let out = self.psql_args(dbname, &["-c", sql]);
        check(&out, &format!("psql -c {sql:?}"), &self.log);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs psql with `args` (after the connection options); the caller
    /// checks the output.
    pub fn psql_args(&self, dbname: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port, "-U", USER, "-d", dbname])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .expect("run psql")
    }

    /// Runs one of the cluster's client programs (pg_dump, ...) with `args`
    /// after the connection options.
    pub fn client_tool(&self, tool: &str, dbname: &str, args: &[&str]) -> Output {
        let port = self.port.to_string();
        Command::new(self.bin.join(tool))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", USER, "-d", dbname])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"))
    }

    /// Creates a database and returns its name.
    pub fn create_database(&self, name: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name.to_string()
    }

    /// `pg_ctl stop -m immediate`: the server dies without a checkpoint and
    /// its clients' connections break (crash recovery runs at the next start).
    pub fn stop_immediate(&self) {
        let data = self.data.to_string_lossy().into_owned();
        let out = self.server_cmd("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
        check(&out, "pg_ctl stop -m immediate", &self.log);
    }

    /// Starts the server again on the same port after [`Self::stop_immediate`].
    pub fn restart(&self) {
        assert!(
            self.try_start(),
            "the test PostgreSQL server did not start again; its log:\n{}",
            self.log_tail()
        );
    }

    fn try_start(&self) -> bool {
        let data = self.data.to_string_lossy().into_owned();
        let log = self.log.to_string_lossy().into_owned();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=40",
            self.port,
            self.socket_dir.to_string_lossy()
        );
        self.server_cmd(
            "pg_ctl",
            &[
                "start", "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &opts,
            ],
        )
        .status
        .success()
    }

    /// Runs a server program, as the unprivileged user when we are root.
    fn server_cmd(&self, tool: &str, args: &[&str]) -> Output {
        let prog = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        cmd.args(args)
            .current_dir(&self.root)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", prog.display()))
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_string_lossy().into_owned();
            let _ = self.server_cmd("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// `TRACKGATE_PG_BIN`, else the newest `/usr/lib/postgresql/N/bin` with initdb.
fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRACKGATE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server programs are not installed: no /usr/lib/postgresql/*/bin/initdb. \
             Install Debian's `postgresql` package (.ci/install-deps does) or set TRACKGATE_PG_BIN"
        ),
    }
}

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or_else(|_| {
                panic!(
                    "the tests run as root, and PostgreSQL refuses root: they run its server as \
                     user `{user}`, which does not exist. Install Debian's `postgresql` package \
                     (it creates `postgres`) or set TRACKGATE_PG_USER to an unprivileged user"
                )
            })
    };
    (id("-u"), id("-g"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

fn check(out: &Output, what: &str, log: &Path) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}\nserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log_tail(log)
    );
}
