//! The run's output: a human summary, the loud error banner, and the
//! one-line JSON object (`--json`) whose fields the issue fixes.

use crate::args::RunArgs;
use crate::run::Outcome;

pub struct Figures {
    pub rps: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

pub fn figures(o: &Outcome) -> Figures {
    let h = &o.hist;
    let q = |x: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(x)
        }
    };
    Figures {
        rps: o.requests as f64 / o.elapsed.as_secs_f64().max(1e-9),
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: if h.is_empty() { 0 } else { h.max() },
    }
}

fn mode(a: &RunArgs) -> &'static str {
    if a.rate.is_some() {
        "open"
    } else {
        "closed"
    }
}

pub fn human(a: &RunArgs, o: &Outcome) -> String {
    let f = figures(o);
    let rate = a.rate.map(|r| format!(" at {r}/s")).unwrap_or_default();
    format!(
        "loadtest {} {}{}: {} connections on {} core(s), {:?} (+{:?} warm-up)\n\
         requests {}  errors {}  {:.0} req/s\n\
         latency µs: p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
        a.scenario.name(),
        mode(a),
        rate,
        a.connections,
        a.cores,
        a.duration,
        a.warmup,
        o.requests,
        o.errors,
        f.rps,
        f.p50,
        f.p90,
        f.p99,
        f.p999,
        f.max
    )
}

pub fn shout(o: &Outcome) -> String {
    let mut s = format!(
        "\n!!!!!!!! ERRORS: {} in the measured window, {} during warm-up: these figures are not clean !!!!!!!!\n",
        o.errors, o.warmup_errors
    );
    for e in &o.samples {
        s += &format!("  e.g. {e}\n");
    }
    s
}

pub fn json(a: &RunArgs, o: &Outcome) -> String {
    let f = figures(o);
    serde_json::json!({
        "scenario": a.scenario.name(),
        "mode": mode(a),
        "connections": a.connections,
        "rate": a.rate,
        "requests": o.requests,
        "errors": o.errors,
        "rps": (f.rps * 10.0).round() / 10.0,
        "p50_us": f.p50,
        "p90_us": f.p90,
        "p99_us": f.p99,
        "p999_us": f.p999,
        "max_us": f.max,
    })
    .to_string()
}
