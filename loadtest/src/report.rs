//! Run reports: text for people, JSON for scripts, SVG latency plots.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::{RunConfig, RunResult};

#[derive(Serialize, Clone, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// Microseconds, from a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1_000.0;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1_000.0,
        }
    }
}

#[derive(Serialize, Clone, Debug)]
pub struct Report {
    pub target: String,
    pub scenario: String,
    pub mode: String,
    pub rate: Option<f64>,
    pub connections: usize,
    pub pipeline: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub responses: u64,
    pub throughput_rps: f64,
    /// Microseconds.
    pub latency_us: Latency,
    pub statuses: std::collections::BTreeMap<u16, u64>,
    pub errors: std::collections::BTreeMap<String, u64>,
    /// How latency was measured, in words.
    pub correction: String,
    /// (percentile, microseconds) points of the latency distribution.
    pub percentiles: Vec<(f64, f64)>,
}

impl Report {
    pub fn new(cfg: &RunConfig, r: &RunResult) -> Self {
        let correction = match cfg.rate {
            Some(_) => "open loop: latency counted from each request's intended start on the fixed schedule (coordinated omission corrected)",
            None => "closed loop: latency counted from each request's send; each connection waits for a window slot, so there is no schedule to omit",
        };
        Report {
            target: cfg.target.to_string(),
            scenario: cfg.scenario.name().into(),
            mode: if cfg.rate.is_some() { "open" } else { "closed" }.into(),
            rate: cfg.rate,
            connections: cfg.connections,
            pipeline: cfg.pipeline,
            warmup_s: cfg.warmup.as_secs_f64(),
            duration_s: cfg.duration.as_secs_f64(),
            responses: r.responses,
            throughput_rps: r.throughput(),
            latency_us: Latency::of(&r.hist),
            statuses: r.statuses.clone(),
            errors: r.errors.clone(),
            correction: correction.into(),
            percentiles: percentile_points(&r.hist),
        }
    }

    pub fn text(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "target {}  scenario {}  {} loop{}  {} connections  pipeline {}",
            self.target,
            self.scenario,
            self.mode,
            self.rate
                .map(|r| format!(" at {r:.0} req/s"))
                .unwrap_or_default(),
            self.connections,
            self.pipeline
        );
        let _ = writeln!(
            s,
            "{} responses in {:.1} s: {:.0} req/s",
            self.responses, self.duration_s, self.throughput_rps
        );
        let _ = writeln!(
            s,
            "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(s, "statuses: {}", statuses.join(", "));
        if self.errors.is_empty() {
            let _ = writeln!(s, "errors: none");
        } else {
            let _ = writeln!(s, "errors by code:");
            for (k, v) in &self.errors {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        let _ = writeln!(s, "({})", self.correction);
        s
    }
}

/// Points for a percentile plot: 0 to 99.999 on a log-of-1/(1-p) axis.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut pts = Vec::new();
    let mut p = 0.0f64;
    while p < 99.9991 {
        pts.push((p, h.value_at_percentile(p) as f64 / 1_000.0));
        // Halve the remaining distance to 100 in 8 steps per halving.
        let rest = 100.0 - p;
        p += rest * (1.0 - 0.5f64.powf(1.0 / 8.0));
        if rest < 0.001 {
            break;
        }
    }
    pts.push((100.0, h.max() as f64 / 1_000.0));
    pts
}

/// An SVG plot of latency by percentile for one or more series
/// (name, points), log-scaled on both axes.
pub fn svg(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 480.0;
    const L: f64 = 70.0;
    const R: f64 = 20.0;
    const T: f64 = 40.0;
    const B: f64 = 50.0;
    const COLORS: [&str; 6] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let xv = |p: f64| (1.0 / (1.0 - (p / 100.0).min(0.99999))).log10(); // 0..5
    let ymax = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let ymin = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .max(0.1);
    let (ly0, ly1) = (
        ymin.log10().floor(),
        ymax.log10().ceil().max(ymin.log10().floor() + 1.0),
    );
    let px = |p: f64| L + xv(p) / 5.0 * (W - L - R);
    let py = |us: f64| H - B - (us.max(ymin).log10() - ly0) / (ly1 - ly0) * (H - T - B);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = L + i as f64 / 5.0 * (W - L - R);
        let _ = write!(
            s,
            r##"<line x1="{x}" y1="{T}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            H - B,
            H - B + 18.0
        );
    }
    let mut d = ly0;
    while d <= ly1 + 1e-9 {
        let y = py(10f64.powf(d));
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0,
            fmt_us(10f64.powf(d))
        );
        d += 1.0;
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">latency</text>"#,
        (W + L) / 2.0,
        H - 10.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .filter(|(p, _)| *p < 100.0)
            .map(|(p, us)| format!("{:.1},{:.1}", px(*p), py(*us)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/><rect x="{}" y="{}" width="14" height="4" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
            path.join(" "),
            L + 12.0,
            T + 10.0 + i as f64 * 18.0,
            L + 32.0,
            T + 15.0 + i as f64 * 18.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.0} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.0} ms", us / 1_000.0)
    } else {
        format!("{us:.0} us")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plot_has_one_line_per_series() {
        let mut h = crate::client::new_histogram();
        for v in 1..10_000u64 {
            h.record(v * 1_000).expect("record");
        }
        let pts = percentile_points(&h);
        assert!(pts.len() > 20);
        assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let svg = svg("t <1>", &[("a".into(), pts.clone()), ("b".into(), pts)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
