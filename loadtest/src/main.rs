//! `loadtest`: trackgate's load generator (closed and open loop, every
//! answer checked), the origin it measures proxies against, and the SVG
//! latency chart. See `--help` and PERFORMANCE.md.

mod args;
mod chart;
mod http;
mod origin;
mod report;
mod run;
mod scenario;
mod schedule;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match args::parse(&argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadtest: {e}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        args::Command::Help => {
            println!("{}", args::USAGE);
            ExitCode::SUCCESS
        }
        args::Command::Origin {
            addr,
            cores,
            driver,
        } => match origin::serve(addr, cores, driver) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest: {e}");
                ExitCode::from(2)
            }
        },
        args::Command::Chart { input, out } => {
            let r = std::fs::read_to_string(&input)
                .map_err(|e| format!("chart: cannot read {input}: {e}"))
                .and_then(|t| chart::parse(&t))
                .and_then(|s| {
                    std::fs::write(&out, chart::svg(&s))
                        .map_err(|e| format!("chart: cannot write {out}: {e}"))
                });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("loadtest: {e}");
                    ExitCode::from(2)
                }
            }
        }
        args::Command::Run(a) => match run::run(&a) {
            Ok(o) => {
                print!("{}", report::human(&a, &o));
                if o.errors + o.warmup_errors > 0 {
                    eprint!("{}", report::shout(&o));
                }
                if a.json {
                    println!("{}", report::json(&a, &o));
                }
                if o.errors + o.warmup_errors > 0 {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("loadtest: {e}");
                ExitCode::from(2)
            }
        },
    }
}
