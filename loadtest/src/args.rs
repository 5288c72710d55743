//! Command-line parsing: the run flags, the `origin` and `chart`
//! subcommands, and durations (`3`, `3s`, `500ms`, `1m`). Plain functions
//! over `&[String]` so every rule is unit-tested; a bad flag is an error
//! naming the flag, the value and the form expected.

use std::net::SocketAddr;
use std::time::Duration;

use crate::scenario::Scenario;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(RunArgs),
    Origin {
        addr: SocketAddr,
        cores: usize,
        driver: Driver,
    },
    Chart {
        input: String,
        out: String,
    },
    Help,
}

/// A load run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunArgs {
    pub url: Url,
    pub scenario: Scenario,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub cores: usize,
    /// Requests per second over all connections (open loop); `None`: closed loop.
    pub rate: Option<u64>,
    pub json: bool,
    pub hmac_secret: Option<String>,
    /// monoio's driver: io_uring (falls back to epoll where the kernel
    /// has none) or epoll.
    pub driver: Driver,
}

/// `--driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Uring,
    Epoll,
}

/// `http://host:port[/prefix]`: where to send requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub addr: SocketAddr,
    /// `Host` header value (`host:port` as given).
    pub host: String,
    /// Path prefix without a trailing `/` (empty for none).
    pub prefix: String,
}

pub const USAGE: &str = "\
usage:
  loadtest [--url http://127.0.0.1:19890] [--scenario pixel|collect|stealth|proxy|inject|mix]
           [--duration 10s] [--warmup 2s] [--connections 64] [--cores 1] [--rate R]
           [--hmac-secret S] [--driver uring|epoll] [--json]
  loadtest origin --addr 127.0.0.1:8080 [--cores 1] [--driver uring|epoll]
  loadtest chart --input results.tsv --out latency.svg

  --duration/--warmup: seconds (`3`), or with a unit: `3s`, `500ms`, `1m`
  --rate: open loop at R requests/s in total (latency from the intended send
          time); without it: closed loop, as fast as the server answers
  collect, stealth and mix need --hmac-secret (the server's HMAC_SECRET)
  --json: the last line of output is one JSON object with the results
  exit status: 0 ok, 1 the run saw errors, 2 bad arguments";

/// Parses a duration: a bare number is seconds; `ms`, `s`, `m` suffixes.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration: use seconds (`3`) or `3s`, `500ms`, `1m`");
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1u64)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else {
        (s, 1000)
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = num.parse().map_err(|_| bad())?;
    n.checked_mul(mult_ms)
        .map(Duration::from_millis)
        .ok_or_else(bad)
}

/// Parses `http://host:port[/prefix]` (a literal IP; no TLS).
pub fn parse_url(s: &str) -> Result<Url, String> {
    let rest = s
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url `{s}`: only http:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let addr: SocketAddr = hostport.parse().map_err(|_| {
        format!(
            "--url `{s}`: the host must be an IP address with a port, e.g. http://127.0.0.1:19890"
        )
    })?;
    Ok(Url {
        addr,
        host: hostport.to_string(),
        prefix: path.trim_end_matches('/').to_string(),
    })
}

fn parse_driver(v: &str) -> Result<Driver, String> {
    match v {
        "uring" => Ok(Driver::Uring),
        "epoll" => Ok(Driver::Epoll),
        _ => Err(format!("--driver `{v}`: expected uring or epoll")),
    }
}

fn number(flag: &str, v: &str) -> Result<u64, String> {
    v.parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{flag} `{v}`: expected a whole number above 0"))
}

/// Parses the whole command line (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args.first().map(String::as_str) {
        Some("origin") => return parse_origin(&args[1..]),
        Some("chart") => return parse_chart(&args[1..]),
        _ => {}
    }
    let mut run = RunArgs {
        url: parse_url("http://127.0.0.1:19890")?,
        scenario: Scenario::Pixel,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        connections: 64,
        cores: 1,
        rate: None,
        json: false,
        hmac_secret: None,
        driver: Driver::Uring,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        if flag == "--json" {
            run.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let v = it
            .next()
            .ok_or_else(|| format!("{flag}: missing value (see --help)"))?;
        match flag {
            "--url" => run.url = parse_url(v)?,
            "--scenario" => run.scenario = Scenario::parse(v)?,
            "--duration" => {
                run.duration = parse_duration(v).map_err(|e| format!("--duration {e}"))?
            }
            "--warmup" => run.warmup = parse_duration(v).map_err(|e| format!("--warmup {e}"))?,
            "--connections" => run.connections = number(flag, v)? as usize,
            "--cores" => run.cores = number(flag, v)? as usize,
            "--rate" => run.rate = Some(number(flag, v)?),
            "--hmac-secret" => run.hmac_secret = Some(v.clone()),
            "--driver" => run.driver = parse_driver(v)?,
            _ => return Err(format!("unknown flag `{flag}` (see --help)")),
        }
    }
    if run.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    if run.connections < run.cores {
        return Err(format!(
            "--connections {} is fewer than --cores {}: every core needs a connection",
            run.connections, run.cores
        ));
    }
    if run.scenario.needs_secret() && run.hmac_secret.is_none() {
        return Err(format!(
            "--scenario {} signs its requests: give --hmac-secret (the server's HMAC_SECRET)",
            run.scenario.name()
        ));
    }
    Ok(Command::Run(run))
}

fn parse_origin(args: &[String]) -> Result<Command, String> {
    let mut addr = None;
    let mut cores = 1;
    let mut driver = Driver::Uring;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("origin {flag}: missing value"))?;
        match flag.as_str() {
            "--addr" => {
                addr = Some(v.parse().map_err(|_| {
                    format!("origin --addr `{v}`: expected IP:PORT, e.g. 127.0.0.1:8080")
                })?)
            }
            "--cores" => cores = number("origin --cores", v)? as usize,
            "--driver" => driver = parse_driver(v)?,
            _ => return Err(format!("origin: unknown flag `{flag}`")),
        }
    }
    let addr = addr.ok_or("origin: --addr IP:PORT is required")?;
    Ok(Command::Origin {
        addr,
        cores,
        driver,
    })
}

fn parse_chart(args: &[String]) -> Result<Command, String> {
    let (mut input, mut out) = (None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("chart {flag}: missing value"))?;
        match flag.as_str() {
            "--input" => input = Some(v.clone()),
            "--out" => out = Some(v.clone()),
            _ => return Err(format!("chart: unknown flag `{flag}`")),
        }
    }
    Ok(Command::Chart {
        input: input.ok_or("chart: --input FILE is required")?,
        out: out.ok_or("chart: --out FILE.svg is required")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "s",
            "-1",
            "1.5s",
            "3h",
            "1 s",
            "ms",
            "99999999999999999999",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn urls() {
        let u = parse_url("http://127.0.0.1:8080/_t/").unwrap();
        assert_eq!(u.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(u.host, "127.0.0.1:8080");
        assert_eq!(u.prefix, "/_t");
        assert_eq!(parse_url("http://[::1]:80").unwrap().prefix, "");
        assert!(parse_url("https://127.0.0.1:1").is_err());
        assert!(parse_url("http://localhost:1").is_err());
        assert!(parse_url("http://127.0.0.1").is_err());
    }

    #[test]
    fn run_flags() {
        let c = parse(&args(
            "--url http://127.0.0.1:9 --scenario collect --hmac-secret s3cr3t-s3cr3t-s3 \
             --duration 1m --warmup 0 --connections 8 --cores 2 --rate 5000 --driver epoll --json",
        ))
        .unwrap();
        let Command::Run(r) = c else {
            panic!("not a run: {c:?}")
        };
        assert_eq!(r.scenario, Scenario::Collect);
        assert_eq!(r.duration, Duration::from_secs(60));
        assert_eq!(r.warmup, Duration::ZERO);
        assert_eq!(
            (r.connections, r.cores, r.rate, r.json),
            (8, 2, Some(5000), true)
        );
        assert_eq!(r.hmac_secret.as_deref(), Some("s3cr3t-s3cr3t-s3"));
        assert_eq!(r.driver, Driver::Epoll);
        // Defaults: closed loop, pixel.
        let Command::Run(d) = parse(&[]).unwrap() else {
            panic!()
        };
        assert_eq!((d.scenario, d.rate, d.json), (Scenario::Pixel, None, false));
        assert_eq!(d.driver, Driver::Uring);
    }

    #[test]
    fn run_flag_errors_name_the_flag() {
        let err = |s: &str| parse(&args(s)).unwrap_err();
        assert!(err("--connections 0").contains("--connections"));
        assert!(err("--rate x").contains("--rate"));
        assert!(err("--duration 0").contains("--duration"));
        assert!(err("--duration 3h").contains("--duration"));
        assert!(err("--scenario nope").contains("nope"));
        assert!(err("--scenario collect").contains("--hmac-secret"));
        assert!(err("--scenario mix").contains("--hmac-secret"));
        assert!(err("--cores 4 --connections 2").contains("--cores"));
        assert!(err("--bogus 1").contains("--bogus"));
        assert!(err("--url").contains("missing value"));
        assert!(err("--driver kqueue").contains("--driver"));
    }

    #[test]
    fn subcommands() {
        assert_eq!(
            parse(&args("origin --addr 127.0.0.1:8080")).unwrap(),
            Command::Origin {
                addr: "127.0.0.1:8080".parse().unwrap(),
                cores: 1,
                driver: Driver::Uring
            }
        );
        assert!(parse(&args("origin")).is_err());
        assert!(parse(&args("origin --addr nowhere")).is_err());
        assert_eq!(
            parse(&args("chart --input a.tsv --out b.svg")).unwrap(),
            Command::Chart {
                input: "a.tsv".into(),
                out: "b.svg".into()
            }
        );
        assert!(parse(&args("chart --input a.tsv")).is_err());
    }
}
