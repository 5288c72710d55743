//! The command line: `serve` (the default), `demo`, `healthcheck`, `--help`
//! and `--version`. Everything else is configured by environment variables
//! (see `config::VARS`), as GoTrack was.

use crate::config::{self, Config, Mode};
use crate::demo::DemoOrigin;
use crate::{error, info, logging, server};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

fn usage() -> String {
    let mut s = String::new();
    s.push_str(concat!(
        "trackgate ",
        env!("CARGO_PKG_VERSION"),
        ": first-party tracking pixel and event collector, a thread-per-core reverse proxy\n\n",
        "USAGE:\n",
        "  trackgate [serve]                     run the proxy, configured by the environment\n",
        "  trackgate demo                        run a built-in demo site behind the proxy (no external services)\n",
        "  trackgate healthcheck [--addr H:P]    exit 0 when /healthz answers ok (container health checks)\n",
        "  trackgate --help | --version\n\n",
        "GoTrack's flags -healthcheck, -health-host HOST and -health-port PORT are accepted too.\n\n",
        "ENVIRONMENT (default in brackets):\n",
    ));
    let width = config::VARS.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for var in config::VARS {
        let default = if var.default.is_empty() {
            String::new()
        } else {
            format!(" [{}]", var.default)
        };
        s.push_str(&format!(
            "  {:width$}  {}{}\n",
            var.name,
            var.help,
            default,
            width = width
        ));
    }
    s
}

/// Entry point; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let first = args.first().map(String::as_str);
    match first {
        None | Some("serve") => serve(),
        Some("demo") => demo(),
        Some("healthcheck") | Some("-healthcheck") | Some("--healthcheck") => {
            healthcheck(&args[1..])
        }
        Some("-h") | Some("--help") | Some("help") => {
            print!("{}", usage());
            0
        }
        Some("-V") | Some("--version") | Some("version") => {
            println!("trackgate {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some(_)
            if args
                .iter()
                .any(|a| a == "-healthcheck" || a == "--healthcheck") =>
        {
            healthcheck(&args)
        }
        Some(other) => {
            eprintln!("trackgate: unknown command {other:?}; see `trackgate --help`");
            2
        }
    }
}

/// Loads the configuration or prints the one-line error (exit code 2).
fn load(mode: Mode) -> Result<Config, i32> {
    match Config::from_env(mode) {
        Ok(c) => {
            logging::init(c.log_level, c.log_format);
            Ok(c)
        }
        Err(e) => {
            eprintln!("trackgate: configuration error: {e}");
            Err(2)
        }
    }
}

fn serve() -> i32 {
    let cfg = match load(Mode::Serve) {
        Ok(c) => c,
        Err(code) => return code,
    };
    server::run(cfg, &|_| {})
}

fn demo() -> i32 {
    let mut cfg = match load(Mode::Demo) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let origin = match DemoOrigin::start(SocketAddr::from(([127, 0, 0, 1], 0))) {
        Ok(o) => o,
        Err(e) => {
            error!("cannot start the demo origin", error = e);
            return 1;
        }
    };
    if cfg.destination.is_none() {
        match config::parse_destination(&format!("http://{}", origin.addr())) {
            Ok(d) => cfg.destination = Some(d),
            Err(e) => {
                error!("demo origin address", error = e);
                return 1;
            }
        }
    }
    if cfg.hmac_secret_generated {
        info!("HMAC_SECRET is not set: using a random secret for this run (tokens end with the process; set HMAC_SECRET to keep them)");
    }
    let events = match &cfg.log_path {
        config::LogTarget::Stdout => "stdout".to_string(),
        config::LogTarget::File(p) => p.display().to_string(),
    };
    let origin_addr = origin.addr();
    let any = cfg.server_addr_any;
    let code = server::run(cfg, &move |addr| {
        let host = if any || addr.ip().is_unspecified() {
            "localhost".to_string()
        } else if addr.is_ipv6() {
            format!("[{}]", addr.ip())
        } else {
            addr.ip().to_string()
        };
        eprintln!(
            "\ntrackgate demo is running\n  open    http://{host}:{port}/\n  origin  http://{origin_addr} (the built-in demo site)\n  events  {events}  (one NDJSON line per event)\n  stop    Ctrl-C\n",
            port = addr.port()
        );
    });
    origin.shutdown();
    code
}

/// `healthcheck`: GET /healthz on the local server; exit 0 when it says ok.
fn healthcheck(args: &[String]) -> i32 {
    let mut addr: Option<String> = None;
    let mut host: Option<String> = None;
    let mut port: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut val = || inline.clone().or_else(|| it.next().cloned());
        match flag {
            "healthcheck" | "-healthcheck" | "--healthcheck" => {}
            "--addr" | "-addr" => addr = val(),
            "-health-host" | "--health-host" => host = val(),
            "-health-port" | "--health-port" => port = val(),
            other => {
                eprintln!("trackgate healthcheck: unknown flag {other:?}");
                return 2;
            }
        }
    }
    let prefix = std::env::var("TRACK_PREFIX").unwrap_or_default();
    let prefix = prefix.trim().trim_end_matches('/');
    let target = match (addr, host, port) {
        (Some(a), _, _) => a,
        (None, h, p) => {
            let server = std::env::var("SERVER_ADDR").unwrap_or_else(|_| ":19890".into());
            let (def_host, def_port) = match config::parse_listen_addr("SERVER_ADDR", &server) {
                Ok((sa, _)) => (sa.ip(), sa.port()),
                Err(_) => (IpAddr::V4(Ipv4Addr::LOCALHOST), 19890),
            };
            let def_host = if def_host.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                def_host
            };
            let h = h.unwrap_or_else(|| def_host.to_string());
            let p = p.unwrap_or_else(|| def_port.to_string());
            if h.contains(':') && !h.starts_with('[') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        }
    };
    match probe(&target, &format!("{prefix}/healthz")) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("trackgate healthcheck: {target}: {e}");
            1
        }
    }
}

fn probe(target: &str, path: &str) -> Result<(), String> {
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("bad address: {e}"))?
        .next()
        .ok_or("no address")?;
    let timeout = Duration::from_secs(3);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut resp)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let ok_status = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    if ok_status && text.ends_with("ok\n") {
        Ok(())
    } else {
        Err(format!(
            "unhealthy answer: {}",
            text.lines().next().unwrap_or("(empty)")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let u = usage();
        for var in config::VARS {
            assert!(u.contains(var.name), "{}", var.name);
            if !var.default.is_empty() {
                assert!(u.contains(&format!("[{}]", var.default)), "{}", var.name);
            }
        }
    }
}
