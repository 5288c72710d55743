//! `loadtest chart`: draws latency percentiles as an SVG (no plotting
//! crate: a few lines of text). Input: one run per line, `label<TAB>json`,
//! the JSON being a run's `--json` line. One panel per scenario; in each,
//! one line per label over p50, p90, p99, p99.9 and max, on a log scale.

use serde_json::Value;

const COLOURS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];
const POINTS: [(&str, &str); 5] = [
    ("p50_us", "p50"),
    ("p90_us", "p90"),
    ("p99_us", "p99"),
    ("p999_us", "p99.9"),
    ("max_us", "max"),
];

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub scenario: String,
    pub label: String,
    pub us: [f64; 5],
}

/// Parses the input lines; blank lines and `#` comments are skipped.
pub fn parse(input: &str) -> Result<Vec<Series>, String> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (label, json) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: expected `label<TAB>json`", i + 1))?;
        let v: Value = serde_json::from_str(json).map_err(|e| format!("line {}: {e}", i + 1))?;
        let mut us = [0.0; 5];
        for (j, (key, _)) in POINTS.iter().enumerate() {
            us[j] = v[key]
                .as_f64()
                .ok_or_else(|| format!("line {}: no number `{key}`", i + 1))?;
        }
        let scenario = v["scenario"].as_str().unwrap_or("?").to_string();
        out.push(Series {
            scenario,
            label: label.to_string(),
            us,
        });
    }
    if out.is_empty() {
        return Err("no runs in the input".into());
    }
    Ok(out)
}

/// The SVG for `series`.
pub fn svg(series: &[Series]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for s in series {
        if !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
    }
    let (pw, ph, left, top, bottom) = (360.0, 300.0, 60.0, 40.0, 40.0);
    let width = left + scenarios.len() as f64 * (pw + 20.0) + 200.0;
    let height = top + ph + bottom + 20.0;
    let lo = series
        .iter()
        .flat_map(|s| s.us)
        .fold(f64::MAX, f64::min)
        .max(1.0);
    let hi = series.iter().flat_map(|s| s.us).fold(1.0, f64::max);
    let (dlo, dhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let y = |us: f64| top + ph - (us.max(1.0).log10() - dlo) / (dhi - dlo) * ph;
    let mut o = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let mut labels: Vec<&str> = Vec::new();
    for s in series {
        if !labels.contains(&s.label.as_str()) {
            labels.push(&s.label);
        }
    }
    for (pi, sc) in scenarios.iter().enumerate() {
        let x0 = left + pi as f64 * (pw + 20.0);
        o += &format!(
            "<text x=\"{:.0}\" y=\"{:.0}\" font-weight=\"bold\">{sc}: latency (µs, log scale)</text>\n",
            x0,
            top - 15.0
        );
        o += &format!(
            "<rect x=\"{x0:.0}\" y=\"{top:.0}\" width=\"{pw:.0}\" height=\"{ph:.0}\" fill=\"none\" stroke=\"#999\"/>\n"
        );
        let mut d = dlo;
        while d <= dhi {
            let yy = y(10f64.powf(d));
            o += &format!(
                "<line x1=\"{x0:.0}\" x2=\"{:.0}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                x0 + pw,
                x0 - 4.0,
                yy + 4.0,
                10f64.powf(d) as u64
            );
            d += 1.0;
        }
        let xs = |j: usize| x0 + 30.0 + j as f64 * (pw - 60.0) / (POINTS.len() - 1) as f64;
        for (j, (_, name)) in POINTS.iter().enumerate() {
            o += &format!(
                "<text x=\"{:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{name}</text>\n",
                xs(j),
                top + ph + 16.0
            );
        }
        for s in series.iter().filter(|s| s.scenario == *sc) {
            let li = labels.iter().position(|l| *l == s.label).unwrap_or(0);
            let c = COLOURS[li % COLOURS.len()];
            let pts: Vec<String> =
                s.us.iter()
                    .enumerate()
                    .map(|(j, &v)| format!("{:.1},{:.1}", xs(j), y(v)))
                    .collect();
            o += &format!(
                "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>\n",
                pts.join(" ")
            );
        }
    }
    let lx = left + scenarios.len() as f64 * (pw + 20.0);
    for (li, l) in labels.iter().enumerate() {
        let c = COLOURS[li % COLOURS.len()];
        let ly = top + 10.0 + li as f64 * 18.0;
        o += &format!(
            "<line x1=\"{lx:.0}\" x2=\"{:.0}\" y1=\"{ly:.0}\" y2=\"{ly:.0}\" stroke=\"{c}\" stroke-width=\"3\"/>\
             <text x=\"{:.0}\" y=\"{:.0}\">{}</text>\n",
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(l)
        );
    }
    o += "</svg>\n";
    o
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"scenario":"pixel","mode":"open","connections":8,"rate":1000,"requests":5000,"errors":0,"rps":1000.0,"p50_us":80,"p90_us":120,"p99_us":400,"p999_us":900,"max_us":2000}"#;

    #[test]
    fn parses_runs_and_draws_one_line_each() {
        let input = format!("# comment\ntrackgate 50%\t{LINE}\n\nnginx <50%>\t{LINE}\n");
        let s = parse(&input).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].us, [80.0, 120.0, 400.0, 900.0, 2000.0]);
        let out = svg(&s);
        assert!(out.starts_with("<svg"));
        assert_eq!(out.matches("<polyline").count(), 2);
        assert!(out.contains("nginx &lt;50%&gt;"));
        assert!(out.contains("pixel: latency"));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(parse("").is_err());
        assert!(parse("no tab here").is_err());
        assert!(parse("x\t{\"scenario\":\"pixel\"}").is_err());
    }
}
