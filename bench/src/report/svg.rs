//! The latency plots: percentile curves, panels side by side, log-log, as SVG.

use std::fmt::Write as _;

use super::select::find_run;
use crate::load::Proto;
use crate::results::{ClusterResults, LoadResults};
use crate::stats::Summary;

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// (percentile, microseconds)
    points: Vec<(f64, f64)>,
}

struct Panel {
    title: String,
    series: Vec<Series>,
}

fn points(summary: &Summary) -> Vec<(f64, f64)> {
    summary
        .distribution
        .iter()
        .copied()
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// x: log10(1 / (1 - q)), the maximum drawn at the right edge.
fn x_of(q: f64) -> f64 {
    if q >= 100.0 {
        4.55
    } else {
        (1.0 / (1.0 - q / 100.0)).log10().min(4.0)
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Latency percentile plots, panels side by side, log-log, shared y axis.
fn svg(title: &str, panels: &[Panel]) -> String {
    let (pw, ph, left, top, bottom, gap) = (300.0, 260.0, 70.0, 50.0, 110.0, 30.0);
    let width = left + panels.len() as f64 * (pw + gap) + 10.0;
    let height = top + ph + bottom;
    let all: Vec<f64> = panels
        .iter()
        .flat_map(|p| p.series.iter())
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let lo = all.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0);
    let hi = all.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
    let (ylo, yhi) = (lo.log10().floor(), hi.log10().ceil());
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="20" font-size="14" text-anchor="middle">{}</text>"#,
        width / 2.0,
        esc(title)
    );
    for (i, panel) in panels.iter().enumerate() {
        let x0 = left + i as f64 * (pw + gap);
        let px = |x: f64| x0 + x / 4.55 * pw;
        let py = |v: f64| top + ph - (v.max(1.0).log10() - ylo) / (yhi - ylo) * ph;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
            x0 + pw / 2.0,
            top - 10.0,
            esc(&panel.title)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>"##
        );
        for (x, label) in [
            (0.0, "p0"),
            (1.0, "p90"),
            (2.0, "p99"),
            (3.0, "p99.9"),
            (4.0, "p99.99"),
            (4.55, "max"),
        ] {
            let _ = writeln!(
                s,
                r##"<line x1="{0}" y1="{top}" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{label}</text>"##,
                px(x),
                top + ph,
                top + ph + 14.0
            );
        }
        let mut decade = ylo;
        while decade <= yhi {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powf(decade);
                if v.log10() > yhi + 1e-9 {
                    continue;
                }
                let y = py(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="{}"/>"##,
                    x0 + pw,
                    if m == 1.0 { "#ccc" } else { "#eee" }
                );
                if i == 0 {
                    let label = if v >= 1000.0 {
                        format!("{} ms", v / 1000.0)
                    } else {
                        format!("{v} µs")
                    };
                    let _ = writeln!(
                        s,
                        r#"<text x="{}" y="{}" text-anchor="end">{label}</text>"#,
                        x0 - 4.0,
                        y + 4.0
                    );
                }
            }
            decade += 1.0;
        }
        for series in &panel.series {
            let d: Vec<String> = series
                .points
                .iter()
                .map(|&(q, v)| format!("{:.1},{:.1}", px(x_of(q)), py(v)))
                .collect();
            if d.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{} points="{}"/>"#,
                series.color,
                if series.dashed {
                    r#" stroke-dasharray="5,3""#
                } else {
                    ""
                },
                d.join(" ")
            );
        }
    }
    // Legend, from the first panel.
    if let Some(first) = panels.first() {
        for (j, series) in first.series.iter().enumerate() {
            let columns = if panels.len() > 1 { 2 } else { 1 };
            let x = left + (j % columns) as f64 * 260.0;
            let y = top + ph + 40.0 + (j / columns) as f64 * 18.0;
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{}" stroke-width="2"{}/><text x="{}" y="{}">{}</text>"#,
                x + 30.0,
                series.color,
                if series.dashed {
                    r#" stroke-dasharray="5,3""#
                } else {
                    ""
                },
                x + 36.0,
                y + 4.0,
                esc(&series.label)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{}" fill="#555">latency (log scale) at each percentile (log scale of 1/(1-q))</text>"##,
        height - 8.0
    );
    s.push_str("</svg>\n");
    s
}

pub fn tls_plot(tls: Option<&LoadResults>) -> Option<String> {
    let tls = tls?;
    let mut rates: Vec<u64> = tls
        .runs
        .iter()
        .map(|r| r.run.rate)
        .filter(|&r| r > 0)
        .collect();
    rates.sort_unstable();
    rates.dedup();
    let panels: Vec<Panel> = rates
        .iter()
        .map(|&rate| Panel {
            title: format!("{rate} requests/s"),
            series: [
                ("webhook", Proto::H1, "#1f77b4", false),
                ("webhook", Proto::H2, "#d62728", false),
                ("ceiling", Proto::H1, "#1f77b4", true),
                ("ceiling", Proto::H2, "#d62728", true),
            ]
            .iter()
            .filter_map(|&(server, proto, color, dashed)| {
                let run = find_run(tls, server, proto, rate)?;
                Some(Series {
                    label: format!("{server}, {}", proto.label()),
                    color,
                    dashed,
                    points: points(&run.run.latency),
                })
            })
            .collect(),
        })
        .collect();
    (!panels.is_empty()).then(|| {
        svg(
            "Admission latency over TLS on loopback (open loop)",
            &panels,
        )
    })
}

pub fn cluster_plot(cluster: Option<&ClusterResults>) -> Option<String> {
    let p = cluster?.pod_create.as_ref()?;
    let mut series = vec![
        Series {
            label: "with the webhook".into(),
            color: "#d62728",
            dashed: false,
            points: points(&p.with_webhook),
        },
        Series {
            label: "without (namespace skipped)".into(),
            color: "#1f77b4",
            dashed: true,
            points: points(&p.without_webhook),
        },
    ];
    if let Some(canned) = &p.with_canned_webhook {
        series.push(Series {
            label: "with the echo webhook (ceiling)".into(),
            color: "#7f7f7f",
            dashed: true,
            points: points(canned),
        });
    }
    let panel = Panel {
        title: "pod creation through kube-apiserver".into(),
        series,
    };
    Some(svg("Pod creation latency", &[panel]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plot_is_an_svg_with_one_line_per_series() {
        let summary = Summary {
            distribution: vec![(0.0, 100.0), (90.0, 150.0), (100.0, 900.0)],
            ..Summary::default()
        };
        let panel = Panel {
            title: "t".into(),
            series: vec![Series {
                label: "a <b>".into(),
                color: "#000",
                dashed: false,
                points: points(&summary),
            }],
        };
        let out = svg("title", &[panel]);
        assert!(out.starts_with("<svg"));
        assert_eq!(out.matches("<polyline").count(), 1);
        assert!(out.contains("a &lt;b&gt;"));
    }
}
