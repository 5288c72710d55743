//! The Kafka sink's settings: the `KAFKA_*` variables, checked once at
//! start-up, and the librdkafka properties they become.
//!
//! Every dedicated variable owns its librdkafka properties: `KAFKA_CONFIG`
//! may set any other property but is refused when it names one of those
//! (two places saying different things about `acks` is how a durability
//! promise quietly breaks). The SASL password is never printed, not even in
//! `Debug` output or an error message.

use crate::config::ConfigError;
use std::fmt;
use std::path::PathBuf;

/// librdkafka's own default `message.timeout.ms` is five minutes, which would
/// keep the sink thread (and a graceful shutdown) waiting that long while the
/// brokers are down. trackgate gives up sooner and lets the runner redeliver
/// from the journal; `KAFKA_CONFIG=message.timeout.ms=...` overrides it.
pub const DEFAULT_MESSAGE_TIMEOUT_MS: u64 = 30_000;

/// Producer compression (`KAFKA_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// Every codec, in the order the README lists them.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The value of librdkafka's `compression.type` (and of the variable).
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How many brokers must have a record before its delivery report says
/// delivered (`KAFKA_ACKS`). `acks=0` is refused: its delivery report would
/// acknowledge records no broker ever confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// The partition leader only.
    Leader,
    /// Every in-sync replica.
    All,
}

impl Acks {
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

/// `KAFKA_SASL_MECHANISM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The Kafka sink's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// `bootstrap.servers`; empty when unset (refused when the sink is enabled).
    pub brokers: String,
    pub topic: String,
    pub acks: Acks,
    pub compression: Compression,
    pub idempotent: bool,
    pub sasl: Option<Sasl>,
    /// CA bundle that signs the brokers' certificates (enables TLS).
    pub tls_ca: Option<PathBuf>,
    /// Accept any broker certificate (enables TLS). Logged loudly.
    pub tls_skip_verify: bool,
    /// `KAFKA_CONFIG`, in order.
    pub extra: Vec<(String, String)>,
    /// `KAFKA_DEAD_LETTER`: the NDJSON file events the brokers refuse for
    /// good are appended to (see the module documentation of the sink).
    pub dead_letter: PathBuf,
}

/// `KAFKA_DEAD_LETTER`'s default.
pub const DEFAULT_DEAD_LETTER: &str = "./data/kafka.dead.ndjson";

impl KafkaConfig {
    /// The settings for brokers at `brokers` with every other variable at
    /// its default (tests, and a base to change fields of).
    pub fn with_brokers(brokers: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: "gotrack.events".into(),
            acks: Acks::All,
            compression: Compression::None,
            idempotent: true,
            sasl: None,
            tls_ca: None,
            tls_skip_verify: false,
            extra: Vec::new(),
            dead_letter: PathBuf::from(DEFAULT_DEAD_LETTER),
        }
    }

    /// Reads the `KAFKA_*` variables through `get`, which returns a
    /// variable's value or its default from `config::VARS` (`None` when both
    /// are empty).
    pub fn from_lookup(get: &dyn Fn(&'static str) -> Option<String>) -> Result<Self, ConfigError> {
        let brokers = get("KAFKA_BROKERS").unwrap_or_default();
        if brokers.split(',').any(|b| b.trim().is_empty()) && !brokers.is_empty() {
            return Err(err(
                "KAFKA_BROKERS",
                &brokers,
                "a comma list of host:port, e.g. kafka-1:9092,kafka-2:9092",
            ));
        }
        let topic = get("KAFKA_TOPIC").unwrap_or_default();
        let topic_ok = !topic.is_empty()
            && topic.len() <= 249
            && topic != "."
            && topic != ".."
            && topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !topic_ok {
            return Err(err(
                "KAFKA_TOPIC",
                &topic,
                "a Kafka topic name: 1 to 249 of the characters a-z A-Z 0-9 . _ -",
            ));
        }
        let acks_raw = get("KAFKA_ACKS").unwrap_or_default();
        let acks = match acks_raw.to_ascii_lowercase().as_str() {
            "all" | "-1" => Acks::All,
            "1" => Acks::Leader,
            _ => return Err(err(
                "KAFKA_ACKS",
                &acks_raw,
                "all (every in-sync replica) or 1 (the leader); 0 is refused because a delivery \
                     report without a broker's acknowledgement would let the journal forget events",
            )),
        };
        let comp_raw = get("KAFKA_COMPRESSION").unwrap_or_default();
        let compression = Compression::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(&comp_raw))
            .ok_or_else(|| {
                err(
                    "KAFKA_COMPRESSION",
                    &comp_raw,
                    "none, gzip, snappy, lz4 or zstd",
                )
            })?;
        let idempotent = boolean("KAFKA_IDEMPOTENT", get)?;
        if idempotent && acks != Acks::All {
            return Err(err(
                "KAFKA_ACKS",
                &acks_raw,
                "all while KAFKA_IDEMPOTENT=true (idempotence needs every in-sync replica); \
                 set KAFKA_ACKS=all, or KAFKA_IDEMPOTENT=false to use acks=1",
            ));
        }

        let mechanism = match get("KAFKA_SASL_MECHANISM") {
            None => None,
            Some(m) => Some(match m.to_ascii_uppercase().as_str() {
                "PLAIN" => SaslMechanism::Plain,
                "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
                "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
                _ => {
                    return Err(err(
                        "KAFKA_SASL_MECHANISM",
                        &m,
                        "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (or unset for no SASL)",
                    ))
                }
            }),
        };
        let user = get("KAFKA_SASL_USER");
        let password = get("KAFKA_SASL_PASSWORD");
        let sasl = match (mechanism, user, password) {
            (Some(mechanism), Some(user), Some(password)) => Some(Sasl {
                mechanism,
                user,
                password,
            }),
            (Some(m), None, _) => {
                return Err(err(
                    "KAFKA_SASL_USER",
                    "",
                    &format!("the SASL user name (KAFKA_SASL_MECHANISM={})", m.as_str()),
                ))
            }
            (Some(m), Some(_), None) => {
                return Err(ConfigError {
                    var: "KAFKA_SASL_PASSWORD",
                    given: "<unset>".into(),
                    expected: format!("the SASL password (KAFKA_SASL_MECHANISM={})", m.as_str()),
                })
            }
            (None, Some(_), _) | (None, None, Some(_)) => {
                return Err(err(
                    "KAFKA_SASL_MECHANISM",
                    "",
                    "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, since KAFKA_SASL_USER or \
                     KAFKA_SASL_PASSWORD is set",
                ))
            }
            (None, None, None) => None,
        };

        let tls_ca = match get("KAFKA_TLS_CA") {
            None => None,
            Some(p) => {
                let path = PathBuf::from(&p);
                if let Err(e) = std::fs::File::open(&path) {
                    return Err(err(
                        "KAFKA_TLS_CA",
                        &p,
                        &format!("a readable PEM file of CA certificates ({e})"),
                    ));
                }
                Some(path)
            }
        };
        let tls_skip_verify = boolean("KAFKA_TLS_SKIP_VERIFY", get)?;
        let extra = parse_extra(&get("KAFKA_CONFIG").unwrap_or_default())?;
        let dead_letter = PathBuf::from(get("KAFKA_DEAD_LETTER").unwrap_or_default());
        if dead_letter.as_os_str().is_empty() {
            return Err(err(
                "KAFKA_DEAD_LETTER",
                "",
                "a file path for events the Kafka brokers refuse for good, e.g. ./data/kafka.dead.ndjson",
            ));
        }

        Ok(KafkaConfig {
            brokers,
            topic,
            acks,
            compression,
            idempotent,
            sasl,
            tls_ca,
            tls_skip_verify,
            extra,
            dead_letter,
        })
    }

    /// What the operator must be told when the sink starts with these
    /// settings (logged by `KafkaSink::new`).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.tls_skip_verify {
            w.push(format!(
                "KAFKA_TLS_SKIP_VERIFY=true: the Kafka sink accepts ANY certificate from {} and \
                 does not check the broker's host name; anyone on the network path can read and \
                 alter the events. Set KAFKA_TLS_CA instead.",
                self.brokers
            ));
        }
        w
    }

    /// Whether the connection to the brokers uses TLS.
    pub fn tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_skip_verify
    }

    /// The librdkafka properties, dedicated variables first, then
    /// `KAFKA_CONFIG` (which may set `security.protocol`, e.g. `SSL` for
    /// brokers signed by a public CA).
    pub fn properties(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: &str| p.push((k.to_string(), v.to_string()));
        set("bootstrap.servers", &self.brokers);
        set("acks", self.acks.as_str());
        set("compression.type", self.compression.as_str());
        set(
            "enable.idempotence",
            if self.idempotent { "true" } else { "false" },
        );
        set(
            "message.timeout.ms",
            &DEFAULT_MESSAGE_TIMEOUT_MS.to_string(),
        );
        let protocol = match (self.sasl.is_some(), self.tls()) {
            (true, true) => "SASL_SSL",
            (true, false) => "SASL_PLAINTEXT",
            (false, true) => "SSL",
            (false, false) => "PLAINTEXT",
        };
        set("security.protocol", protocol);
        if let Some(s) = &self.sasl {
            set("sasl.mechanism", s.mechanism.as_str());
            set("sasl.username", &s.user);
            set("sasl.password", &s.password);
        }
        if let Some(ca) = &self.tls_ca {
            set("ssl.ca.location", &ca.to_string_lossy());
        }
        if self.tls_skip_verify {
            set("enable.ssl.certificate.verification", "false");
            set("ssl.endpoint.identification.algorithm", "none");
        }
        for (k, v) in &self.extra {
            // A later value replaces an earlier one (message.timeout.ms,
            // security.protocol).
            p.retain(|(key, _)| key != k);
            p.push((k.clone(), v.clone()));
        }
        p
    }
}

/// Properties that a dedicated variable owns, or whose change would break
/// the delivery-report acknowledgement, and the variable to use instead.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "KAFKA_BROKERS"),
    ("metadata.broker.list", "KAFKA_BROKERS"),
    ("acks", "KAFKA_ACKS"),
    ("request.required.acks", "KAFKA_ACKS"),
    ("compression.type", "KAFKA_COMPRESSION"),
    ("compression.codec", "KAFKA_COMPRESSION"),
    ("enable.idempotence", "KAFKA_IDEMPOTENT"),
    ("sasl.mechanism", "KAFKA_SASL_MECHANISM"),
    ("sasl.mechanisms", "KAFKA_SASL_MECHANISM"),
    ("sasl.username", "KAFKA_SASL_USER"),
    ("sasl.password", "KAFKA_SASL_PASSWORD"),
    ("ssl.ca.location", "KAFKA_TLS_CA"),
    (
        "enable.ssl.certificate.verification",
        "KAFKA_TLS_SKIP_VERIFY",
    ),
    (
        "ssl.endpoint.identification.algorithm",
        "KAFKA_TLS_SKIP_VERIFY",
    ),
    (
        "delivery.report.only.error",
        "nothing: the delivery report of every record is the acknowledgement",
    ),
    (
        "dr_msg_cb",
        "nothing: the delivery report of every record is the acknowledgement",
    ),
    (
        "dr_cb",
        "nothing: the delivery report of every record is the acknowledgement",
    ),
    ("transactional.id", "nothing: the sink is not transactional"),
];

/// Parses `KAFKA_CONFIG`: `key=value` pairs separated by commas.
fn parse_extra(raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    const VAR: &str = "KAFKA_CONFIG";
    let mut out = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(err(
                VAR,
                raw,
                &format!(
                    "comma-separated librdkafka properties key=value, e.g. \
                     linger.ms=20,batch.num.messages=10000 (`{part}` has no `=`)"
                ),
            ));
        };
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(err(VAR, raw, "key=value pairs with a non-empty key"));
        }
        if let Some((_, instead)) = RESERVED.iter().find(|(r, _)| r.eq_ignore_ascii_case(k)) {
            return Err(err(
                VAR,
                raw,
                &format!("no `{k}` here: set {instead} instead"),
            ));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn boolean(
    var: &'static str,
    get: &dyn Fn(&'static str) -> Option<String>,
) -> Result<bool, ConfigError> {
    let raw = get(var).unwrap_or_default();
    match raw.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(err(var, &raw, "true or false")),
    }
}

fn err(var: &'static str, given: &str, expected: &str) -> ConfigError {
    ConfigError {
        var,
        given: format!("{given:?}"),
        expected: expected.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Parses with the defaults of `config::VARS` under `set`.
    fn parse(set: &[(&str, &str)]) -> Result<KafkaConfig, ConfigError> {
        let map: HashMap<String, String> = set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KafkaConfig::from_lookup(&|name| {
            map.get(name)
                .cloned()
                .filter(|v| !v.is_empty())
                .or_else(|| {
                    crate::config::VARS
                        .iter()
                        .find(|v| v.name == name)
                        .map(|v| v.default.to_string())
                        .filter(|d| !d.is_empty())
                })
        })
    }

    fn prop(cfg: &KafkaConfig, key: &str) -> Option<String> {
        cfg.properties()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn defaults_are_the_issue_defaults() {
        let c = parse(&[("KAFKA_BROKERS", "k1:9092,k2:9092")]).unwrap();
        assert_eq!(c, KafkaConfig::with_brokers("k1:9092,k2:9092"));
        assert_eq!(prop(&c, "acks").as_deref(), Some("all"));
        assert_eq!(prop(&c, "enable.idempotence").as_deref(), Some("true"));
        assert_eq!(prop(&c, "security.protocol").as_deref(), Some("PLAINTEXT"));
        assert_eq!(prop(&c, "compression.type").as_deref(), Some("none"));
        assert_eq!(prop(&c, "message.timeout.ms").as_deref(), Some("30000"));
        assert_eq!(c.dead_letter, PathBuf::from("./data/kafka.dead.ndjson"));
        let c = parse(&[("KAFKA_DEAD_LETTER", "/var/lib/trackgate/kafka.dead")]).unwrap();
        assert_eq!(
            c.dead_letter,
            PathBuf::from("/var/lib/trackgate/kafka.dead")
        );
    }

    #[test]
    fn refuses_bad_values_naming_the_variable() {
        let e = |set: &[(&str, &str)]| parse(set).unwrap_err();
        assert_eq!(e(&[("KAFKA_ACKS", "0")]).var, "KAFKA_ACKS");
        assert!(e(&[("KAFKA_ACKS", "1")])
            .expected
            .contains("KAFKA_IDEMPOTENT"));
        assert!(parse(&[("KAFKA_ACKS", "1"), ("KAFKA_IDEMPOTENT", "false")]).is_ok());
        assert_eq!(
            e(&[("KAFKA_COMPRESSION", "brotli")]).var,
            "KAFKA_COMPRESSION"
        );
        assert_eq!(e(&[("KAFKA_TOPIC", "a topic")]).var, "KAFKA_TOPIC");
        assert_eq!(e(&[("KAFKA_BROKERS", "a:1,,b:2")]).var, "KAFKA_BROKERS");
        assert_eq!(e(&[("KAFKA_IDEMPOTENT", "maybe")]).var, "KAFKA_IDEMPOTENT");
        assert_eq!(
            e(&[("KAFKA_SASL_MECHANISM", "GSSAPI")]).var,
            "KAFKA_SASL_MECHANISM"
        );
        assert_eq!(
            e(&[("KAFKA_SASL_MECHANISM", "PLAIN")]).var,
            "KAFKA_SASL_USER"
        );
        assert_eq!(e(&[("KAFKA_SASL_USER", "u")]).var, "KAFKA_SASL_MECHANISM");
        assert_eq!(
            e(&[("KAFKA_TLS_CA", "/nonexistent/ca.pem")]).var,
            "KAFKA_TLS_CA"
        );
        let missing_pw = e(&[("KAFKA_SASL_MECHANISM", "PLAIN"), ("KAFKA_SASL_USER", "u")]);
        assert_eq!(missing_pw.var, "KAFKA_SASL_PASSWORD");
    }

    #[test]
    fn the_password_is_never_printed() {
        let c = parse(&[
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USER", "trackgate"),
            ("KAFKA_SASL_PASSWORD", "hunter2-secret"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(prop(&c, "sasl.mechanism").as_deref(), Some("SCRAM-SHA-512"));
        assert_eq!(
            prop(&c, "security.protocol").as_deref(),
            Some("SASL_PLAINTEXT")
        );
        assert_eq!(prop(&c, "sasl.password").as_deref(), Some("hunter2-secret"));
    }

    #[test]
    fn tls_settings_pick_the_protocol_and_skip_verify_disables_both_checks() {
        let ca = std::env::temp_dir().join(format!("tg-kafka-ca-{}.pem", std::process::id()));
        std::fs::write(&ca, "not checked here").unwrap();
        let c = parse(&[
            ("KAFKA_TLS_CA", ca.to_str().unwrap()),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USER", "u"),
            ("KAFKA_SASL_PASSWORD", "p"),
        ])
        .unwrap();
        assert_eq!(prop(&c, "security.protocol").as_deref(), Some("SASL_SSL"));
        assert_eq!(prop(&c, "ssl.ca.location").as_deref(), ca.to_str());
        assert_eq!(prop(&c, "enable.ssl.certificate.verification"), None);
        assert!(c.warnings().is_empty());
        let c = parse(&[("KAFKA_TLS_SKIP_VERIFY", "true")]).unwrap();
        assert!(c.warnings()[0].contains("ANY certificate"));
        assert_eq!(prop(&c, "security.protocol").as_deref(), Some("SSL"));
        assert_eq!(
            prop(&c, "enable.ssl.certificate.verification").as_deref(),
            Some("false")
        );
        assert_eq!(
            prop(&c, "ssl.endpoint.identification.algorithm").as_deref(),
            Some("none")
        );
        let _ = std::fs::remove_file(ca);
    }

    #[test]
    fn kafka_config_adds_properties_but_not_reserved_ones() {
        let c = parse(&[(
            "KAFKA_CONFIG",
            "linger.ms=20, batch.num.messages=10000,message.timeout.ms=5000,security.protocol=SSL",
        )])
        .unwrap();
        assert_eq!(prop(&c, "linger.ms").as_deref(), Some("20"));
        assert_eq!(prop(&c, "batch.num.messages").as_deref(), Some("10000"));
        assert_eq!(prop(&c, "message.timeout.ms").as_deref(), Some("5000"));
        assert_eq!(prop(&c, "security.protocol").as_deref(), Some("SSL"));
        assert_eq!(
            c.properties()
                .iter()
                .filter(|(k, _)| k == "message.timeout.ms")
                .count(),
            1
        );
        let e = parse(&[("KAFKA_CONFIG", "acks=0")]).unwrap_err();
        assert!(e.expected.contains("KAFKA_ACKS"), "{e}");
        let e = parse(&[("KAFKA_CONFIG", "delivery.report.only.error=true")]).unwrap_err();
        assert!(e.expected.contains("delivery report"), "{e}");
        let e = parse(&[("KAFKA_CONFIG", "linger.ms")]).unwrap_err();
        assert!(e.expected.contains("no `=`"), "{e}");
    }
}
