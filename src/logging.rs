//! The operator log: structured lines on stderr, one `write` per line.
//!
//! Owns the global level and format (`LOG_LEVEL`, `LOG_FORMAT`), the line
//! formatters (JSON, and a logfmt-like text form) and the `error!`, `warn!`,
//! `info!` and `debug!` macros. It writes only to stderr because stdout may
//! carry the NDJSON event stream (`LOG_PATH=stdout`); an operator line there
//! would corrupt it.
//!
//! The macros are exported at the crate root with `#[macro_export]`: call them
//! as `crate::info!(...)` inside the crate and `trackgate::info!(...)` outside.
//! A disabled level costs one relaxed atomic load; the field values are not
//! even evaluated.
//!
//! ```
//! trackgate::info!("core started", core = 0, driver = "io_uring");
//! ```

use std::fmt::{self, Display, Write as _};
use std::io::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// How severe a line is. A line is written when its level is at or above the
/// configured one (`Error` is the most severe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

impl Level {
    /// Every level, most severe first.
    pub const ALL: [Level; 4] = [Level::Error, Level::Warn, Level::Info, Level::Debug];

    /// The name used in `LOG_LEVEL` and in JSON lines.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }

    const fn upper(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }

    const fn from_u8(v: u8) -> Level {
        match v {
            0 => Level::Error,
            1 => Level::Warn,
            2 => Level::Info,
            _ => Level::Debug,
        }
    }
}

impl Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `LOG_LEVEL` value that is not a level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError(pub String);

impl Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log level {:?} (expected one of: error, warn, info, debug)",
            self.0
        )
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        let t = s.trim();
        Level::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseLevelError(s.to_owned()))
    }
}

/// How a line is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Format {
    /// One JSON object per line (the default for `LOG_FORMAT`).
    Json = 0,
    /// `<ts> <LEVEL> <msg> key=value ...`, for people at a terminal.
    Text = 1,
}

impl Format {
    /// The name used in `LOG_FORMAT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Text => "text",
        }
    }
}

impl Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `LOG_FORMAT` value that is not a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFormatError(pub String);

impl Display for ParseFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown log format {:?} (expected one of: json, text)",
            self.0
        )
    }
}

impl std::error::Error for ParseFormatError {}

impl FromStr for Format {
    type Err = ParseFormatError;

    /// Case-insensitive; surrounding whitespace is ignored.
    fn from_str(s: &str) -> Result<Format, ParseFormatError> {
        let t = s.trim();
        [Format::Json, Format::Text]
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseFormatError(s.to_owned()))
    }
}

/// The most verbose level written; before `init`, info.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// The line layout; before `init`, text.
static FORMAT: AtomicU8 = AtomicU8::new(Format::Text as u8);
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Sets the global level and format. Only the first call has an effect; it
/// returns `false` (and changes nothing) when the log was already set up.
pub fn init(level: Level, format: Format) -> bool {
    if INITIALIZED.swap(true, Ordering::AcqRel) {
        return false;
    }
    FORMAT.store(format as u8, Ordering::Relaxed);
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
    true
}

/// Whether a line at `level` would be written (one relaxed load). Use it to
/// skip work that only feeds a log line.
#[inline]
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

fn current_format() -> Format {
    if FORMAT.load(Ordering::Relaxed) == Format::Json as u8 {
        Format::Json
    } else {
        Format::Text
    }
}

/// The current level (as set by [`init`], info before).
pub fn level() -> Level {
    Level::from_u8(MAX_LEVEL.load(Ordering::Relaxed))
}

/// Writes one line at `level`: the macros' back end. Public only for them.
#[doc(hidden)]
pub fn emit(level: Level, msg: &dyn Display, fields: &[(&str, Value<'_>)]) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let mut line = Vec::with_capacity(256);
    write_line(&mut line, current_format(), level, now_ms, msg, fields);
    // Holding the lock across the whole line keeps lines from several
    // threads apart; stderr is unbuffered, so this is one write(2) unless the
    // kernel takes it in parts. Nowhere to report a failed write.
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(&line);
}

/// A field value as the macros classify it: numbers and booleans are written
/// bare in JSON, everything else as a string.
#[doc(hidden)]
pub enum Value<'a> {
    /// An integer or boolean: its `Display` form is valid JSON.
    Raw(&'a dyn Display),
    /// A float: bare when finite, a string (`"NaN"`, `"inf"`) otherwise.
    Float(f64),
    /// Anything else, written through `Display` and escaped.
    Str(&'a dyn Display),
}

/// Formats one complete line, newline included, into `out`.
pub(crate) fn write_line(
    out: &mut Vec<u8>,
    format: Format,
    level: Level,
    unix_ms: u64,
    msg: &dyn Display,
    fields: &[(&str, Value<'_>)],
) {
    match format {
        Format::Json => {
            out.extend_from_slice(b"{\"ts\":\"");
            write_rfc3339_millis(out, unix_ms);
            out.extend_from_slice(b"\",\"level\":\"");
            out.extend_from_slice(level.as_str().as_bytes());
            out.extend_from_slice(b"\",\"msg\":");
            json_string(out, msg);
            for (key, value) in fields {
                out.push(b',');
                json_string(out, key);
                out.push(b':');
                match value {
                    Value::Raw(v) => {
                        let _ = write!(Raw(out), "{v}");
                    }
                    Value::Float(f) if f.is_finite() => {
                        let _ = write!(Raw(out), "{f}");
                    }
                    Value::Float(f) => json_string(out, f),
                    Value::Str(v) => json_string(out, v),
                }
            }
            out.extend_from_slice(b"}\n");
        }
        Format::Text => {
            write_rfc3339_millis(out, unix_ms);
            out.push(b' ');
            out.extend_from_slice(level.upper().as_bytes());
            out.push(b' ');
            let _ = write!(TextEscape(out), "{msg}");
            let mut scratch = String::new();
            for (key, value) in fields {
                out.push(b' ');
                let _ = write!(TextEscape(out), "{key}");
                out.push(b'=');
                scratch.clear();
                let _ = match value {
                    Value::Raw(v) | Value::Str(v) => write!(scratch, "{v}"),
                    Value::Float(f) => write!(scratch, "{f}"),
                };
                text_value(out, &scratch);
            }
            out.push(b'\n');
        }
    }
}

/// Appends bytes as they are.
struct Raw<'a>(&'a mut Vec<u8>);

impl fmt::Write for Raw<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Appends the body of a JSON string (no quotes), escaped.
struct JsonEscape<'a>(&'a mut Vec<u8>);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.extend_from_slice(b"\\\""),
                '\\' => self.0.extend_from_slice(b"\\\\"),
                '\n' => self.0.extend_from_slice(b"\\n"),
                '\r' => self.0.extend_from_slice(b"\\r"),
                '\t' => self.0.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(Raw(self.0), "\\u{:04x}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    self.0.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        Ok(())
    }
}

fn json_string(out: &mut Vec<u8>, v: &dyn Display) {
    out.push(b'"');
    let _ = write!(JsonEscape(out), "{v}");
    out.push(b'"');
}

/// Appends text with control characters escaped, so a line stays one line.
struct TextEscape<'a>(&'a mut Vec<u8>);

impl fmt::Write for TextEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\n' => self.0.extend_from_slice(b"\\n"),
                '\r' => self.0.extend_from_slice(b"\\r"),
                '\t' => self.0.extend_from_slice(b"\\t"),
                c if c.is_control() => {
                    let _ = write!(Raw(self.0), "\\u{{{:x}}}", c as u32);
                }
                c => {
                    let mut b = [0u8; 4];
                    self.0.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        Ok(())
    }
}

/// A text-format value: bare when it is one plain word, otherwise quoted
/// with `"` and `\` escaped (logfmt style).
fn text_value(out: &mut Vec<u8>, v: &str) {
    let plain = !v.is_empty()
        && !v
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control());
    if plain {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    out.push(b'"');
    for c in v.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c => {
                let _ = write!(TextEscape(out), "{c}");
            }
        }
    }
    out.push(b'"');
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Private stand-in for the shared
/// formatter in `clock`, to be swapped for it.
fn write_rfc3339_millis(out: &mut Vec<u8>, unix_ms: u64) {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // Civil date from a day count (proleptic Gregorian, 400-year eras of
    // 146 097 days, years starting on 1 March so the leap day comes last).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let _ = write!(
        Raw(out),
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    );
}

/// Support for the macros; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::Value;
    use std::fmt::Display;

    pub use super::emit;

    /// Wraps a field value so the macros can pick bare numbers by type.
    pub struct Field<'a, T: ?Sized>(pub &'a T);

    /// Chosen for numbers and booleans (matches without auto-ref).
    pub trait ViaNumber {
        fn log_value(&self) -> Value<'_>;
    }

    /// Chosen for every other `Display` type (needs one more auto-ref).
    pub trait ViaDisplay {
        fn log_value(&self) -> Value<'_>;
    }

    macro_rules! bare {
        ($($t:ty),*) => {$(
            impl ViaNumber for Field<'_, $t> {
                fn log_value(&self) -> Value<'_> {
                    Value::Raw(self.0)
                }
            }
            impl ViaNumber for Field<'_, &$t> {
                fn log_value(&self) -> Value<'_> {
                    Value::Raw(*self.0)
                }
            }
        )*};
    }
    bare!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, bool);

    macro_rules! float {
        ($($t:ty),*) => {$(
            impl ViaNumber for Field<'_, $t> {
                fn log_value(&self) -> Value<'_> {
                    Value::Float(f64::from(*self.0))
                }
            }
            impl ViaNumber for Field<'_, &$t> {
                fn log_value(&self) -> Value<'_> {
                    Value::Float(f64::from(**self.0))
                }
            }
        )*};
    }
    float!(f32, f64);

    impl<T: Display + ?Sized> ViaDisplay for &Field<'_, T> {
        fn log_value(&self) -> Value<'_> {
            Value::Str(&self.0)
        }
    }
}

/// Shared body of the level macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __tg_log {
    ($lvl:expr, $msg:expr $(, $key:ident = $val:expr)*) => {
        if $crate::logging::enabled($lvl) {
            #[allow(unused_imports)]
            use $crate::logging::__private::{ViaDisplay as _, ViaNumber as _};
            // The borrow picks bare numbers by type (autoref specialisation).
            #[allow(clippy::needless_borrow)]
            $crate::logging::__private::emit(
                $lvl,
                &$msg,
                &[$((
                    ::core::stringify!($key),
                    (&$crate::logging::__private::Field(&$val)).log_value(),
                )),*],
            );
        }
    };
}

/// Logs at error level: `error!("msg", key = value, ...)`.
#[macro_export]
macro_rules! error {
    ($msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        $crate::__tg_log!($crate::logging::Level::Error, $msg $(, $key = $val)*)
    };
}

/// Logs at warn level: `warn!("msg", key = value, ...)`.
#[macro_export]
macro_rules! warn {
    ($msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        $crate::__tg_log!($crate::logging::Level::Warn, $msg $(, $key = $val)*)
    };
}

/// Logs at info level: `info!("msg", key = value, ...)`.
#[macro_export]
macro_rules! info {
    ($msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        $crate::__tg_log!($crate::logging::Level::Info, $msg $(, $key = $val)*)
    };
}

/// Logs at debug level: `debug!("msg", key = value, ...)`. Free when off.
#[macro_export]
macro_rules! debug {
    ($msg:expr $(, $key:ident = $val:expr)* $(,)?) => {
        $crate::__tg_log!($crate::logging::Level::Debug, $msg $(, $key = $val)*)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-28T01:24:41.123Z
    const TS: u64 = 1_795_829_081_123;

    /// Formats a line at [`TS`] with the fields classified exactly as the
    /// logging macros classify them.
    macro_rules! render {
        ($fmt:expr, $lvl:expr, $msg:expr $(, $key:ident = $val:expr)*) => {{
            #[allow(unused_imports)]
            use super::__private::{Field, ViaDisplay as _, ViaNumber as _};
            let mut out = Vec::new();
            #[allow(clippy::needless_borrow)]
            write_line(
                &mut out,
                $fmt,
                $lvl,
                TS,
                &$msg,
                &[$((stringify!($key), (&Field(&$val)).log_value())),*],
            );
            String::from_utf8(out).unwrap()
        }};
    }

    #[test]
    fn json_line_has_bare_numbers_and_escaped_strings() {
        let l = render!(
            Format::Json,
            Level::Info,
            "core started",
            core = 0,
            driver = "io_uring"
        );
        assert_eq!(
            l,
            "{\"ts\":\"2026-11-28T01:24:41.123Z\",\"level\":\"info\",\"msg\":\"core started\",\"core\":0,\"driver\":\"io_uring\"}\n"
        );
        let port = 8080u16;
        let by_ref = &port;
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let l = render!(
            Format::Json,
            Level::Debug,
            "x",
            port = port,
            r = by_ref,
            a = addr,
            s = "1"
        );
        assert!(
            l.ends_with(",\"port\":8080,\"r\":8080,\"a\":\"127.0.0.1:9\",\"s\":\"1\"}\n"),
            "{l}"
        );
    }

    #[test]
    fn json_escapes_quotes_backslashes_and_controls() {
        let nasty = "a\"b\\c\nd\te\u{1}f \u{7f} é";
        let l = render!(
            Format::Json,
            Level::Error,
            String::from("say \"hi\"\n"),
            v = nasty,
            ratio = 0.5f64,
            nan = f64::NAN,
            ok = true,
            err = std::io::Error::other("bad \"thing\"")
        );
        assert!(l.ends_with('\n'));
        assert_eq!(l.matches('\n').count(), 1, "one line: {l}");
        let v: serde_json::Value = serde_json::from_str(l.trim_end()).unwrap();
        assert_eq!(v["msg"], "say \"hi\"\n");
        assert_eq!(v["level"], "error");
        assert_eq!(v["v"], nasty);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["nan"], "NaN");
        assert_eq!(v["ok"], true);
        assert_eq!(v["err"], "bad \"thing\"");
    }

    #[test]
    fn text_line_quotes_values_that_need_it() {
        let l = render!(
            Format::Text,
            Level::Warn,
            "upstream\nfailed",
            core = 3u32,
            reason = "connection refused",
            empty = "",
            q = "a\"b"
        );
        assert_eq!(
            l,
            "2026-11-28T01:24:41.123Z WARN upstream\\nfailed core=3 reason=\"connection refused\" empty=\"\" q=\"a\\\"b\"\n"
        );
        let l = render!(
            Format::Text,
            Level::Info,
            "core started",
            core = 0,
            driver = "io_uring"
        );
        assert_eq!(
            l,
            "2026-11-28T01:24:41.123Z INFO core started core=0 driver=io_uring\n"
        );
        let l = render!(Format::Text, Level::Error, "bye");
        assert_eq!(l, "2026-11-28T01:24:41.123Z ERROR bye\n");
    }

    #[test]
    fn timestamps() {
        let ts = |ms| {
            let mut o = Vec::new();
            write_rfc3339_millis(&mut o, ms);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(ts(TS), "2026-11-28T01:24:41.123Z");
        assert_eq!(ts(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(ts(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(ts(4_107_585_600_007), "2100-03-01T12:00:00.007Z");
    }

    #[test]
    fn parse_level_and_format() {
        assert_eq!("debug".parse::<Level>(), Ok(Level::Debug));
        assert_eq!(" WARN ".parse::<Level>(), Ok(Level::Warn));
        let e = "verbose".parse::<Level>().unwrap_err().to_string();
        assert!(
            e.contains("verbose") && e.contains("error, warn, info, debug"),
            "{e}"
        );
        assert_eq!("Text".parse::<Format>(), Ok(Format::Text));
        assert_eq!("json".parse::<Format>(), Ok(Format::Json));
        let e = "yaml".parse::<Format>().unwrap_err().to_string();
        assert!(e.contains("yaml") && e.contains("json, text"), "{e}");
    }

    #[test]
    fn levels_filter_by_severity() {
        // The global filter is process-wide; tests never raise it to debug,
        // so debug is off whatever order tests run in.
        assert!(!enabled(Level::Debug));
        assert!(enabled(Level::Error));
        assert!(Level::Error < Level::Warn && Level::Info < Level::Debug);
        let mut evaluated = false;
        crate::debug!(
            "never",
            x = {
                evaluated = true;
                1
            }
        );
        assert!(
            !evaluated,
            "fields of a disabled line must not be evaluated"
        );
        // The macros accept every shape: no fields, fields, trailing comma.
        crate::debug!("plain");
        crate::debug!(String::from("owned"), a = 1, b = "two",);
    }

    #[test]
    fn init_is_set_once() {
        // The only test that calls init; warn keeps debug off for the others.
        let first = init(Level::Warn, Format::Json);
        assert!(first);
        assert_eq!(level(), Level::Warn);
        assert!(!enabled(Level::Info));
        assert!(enabled(Level::Warn));
        assert!(!init(Level::Debug, Format::Text));
        assert_eq!(level(), Level::Warn);
        assert_eq!(current_format(), Format::Json);
    }
}
