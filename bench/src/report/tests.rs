//! The report's figures from small results, and the document from the saved ones.

use std::path::Path;

use serde_json::{Value, json};

use super::select::{closed_loop, find_run, work_at};
use super::*;
use crate::load::Proto;

#[test]
fn only_the_generated_block_is_replaced() {
    let doc = "intro\n<!-- BEGIN GENERATED: x -->\nold\n<!-- END GENERATED: x -->\nprose\n";
    let out = replace_block(doc, "x", "new\n").unwrap();
    assert_eq!(
        out,
        "intro\n<!-- BEGIN GENERATED: x -->\nnew\n<!-- END GENERATED: x -->\nprose\n"
    );
    let err = replace_block(doc, "y", "z").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no <!-- BEGIN GENERATED: y --> in the document"
    );
}

/// One run as `wi-load tls` writes it.
fn run(server: &str, repeat: u64, rate: u64, throughput: f64, p99_us: f64) -> Value {
    json!({
        "server": server, "repeat": repeat, "proto": "HTTP/1.1",
        "mode": if rate == 0 { "closed" } else { "open" }, "rate": rate,
        "connections": 16, "concurrency": 1, "seconds": 5.0, "ok": 1000,
        "throughput": throughput, "errors": 0, "dropped": 0,
        "latency": {
            "count": 1000, "mean_us": 100.0, "p50_us": 100.0, "p90_us": 100.0,
            "p99_us": p99_us, "p999_us": 0.0, "max_us": 0.0, "distribution": [],
        },
        "first_error": null, "reconnects": 0,
        "server_cpu_us_per_request": 1.0, "client_cpu_us_per_request": 1.0,
        "server_memory": {"rss_kib": 1, "hwm_kib": 1},
    })
}

/// Results of `wi-load tls` (or `budget`) with these runs.
fn load_results(repeats: Option<u64>, runs: Vec<Value>) -> LoadResults {
    let mut results = json!({
        "machine": null, "pod": "seed", "request_bytes": 1, "response_bytes": 1,
        "h1_connections": 16, "h2_streams": 32, "runs": runs,
    });
    if let Some(n) = repeats {
        results["repeats"] = n.into();
    }
    serde_json::from_value(results).unwrap()
}

#[test]
fn repeated_runs_report_their_median_and_every_repeat() {
    let tls = load_results(
        Some(3),
        vec![
            // Closed loop: the ratios by pair are 0.5, 0.8 and 0.6; their median is 0.6,
            // where the median throughputs (50/s against 100/s) would say 0.5.
            run("webhook", 0, 0, 50.0, 1.0),
            run("ceiling", 0, 0, 100.0, 1.0),
            run("ceiling", 1, 0, 50.0, 1.0),
            run("webhook", 1, 0, 40.0, 1.0),
            run("webhook", 2, 0, 60.0, 1.0),
            run("ceiling", 2, 0, 100.0, 1.0),
            // At 2,000/s: one stalled repeat (9 ms) does not make the figure.
            run("webhook", 0, 2000, 2000.0, 9000.0),
            run("ceiling", 0, 2000, 2000.0, 800.0),
            run("ceiling", 1, 2000, 2000.0, 700.0),
            run("webhook", 1, 2000, 2000.0, 900.0),
            run("webhook", 2, 2000, 2000.0, 1500.0),
            run("ceiling", 2, 2000, 2000.0, 600.0),
        ],
    );
    let ((w, c, ratio), ratios) = closed_loop(&tls, Proto::H1).unwrap();
    assert_eq!(ratios, vec![0.5, 0.8, 0.6]);
    assert_eq!((w.repeat, c.repeat, ratio), (2, 2, 0.6));
    let w = find_run(&tls, "webhook", Proto::H1, 2000).unwrap();
    assert_eq!(w.repeat, 2);
    assert_eq!(find_run(&tls, "webhook", Proto::H1, 0).unwrap().repeat, 0);
    assert!(find_run(&tls, "webhook", Proto::H2, 0).is_none());

    let block = tables::tls_block(Some(&tls));
    assert!(
        block.contains("| HTTP/1.1 | 60/s | 100/s | 0.60 (runs: 0.50, 0.80, 0.60) |"),
        "{block}"
    );
    // One row per server and rate: the median repeat, with every repeat's p99.
    assert_eq!(
        block.matches("| HTTP/1.1 | 2000/s | webhook |").count(),
        1,
        "{block}"
    );
    assert!(
        block.contains("(runs: 9.00 ms, 900 µs, 1.50 ms)"),
        "{block}"
    );

    let targets = tables::targets_block(None, Some(&tls), None);
    assert!(
        targets
            .contains("| over TLS, HTTP/1.1: at least 0.6 of the ceiling's throughput | 0.60 (60/s against 100/s) (runs: 0.50, 0.80, 0.60) | **met** |"),
        "{targets}"
    );
    assert!(
        targets.contains(
            "p99 under 2 ms at 2,000/s | 1.50 ms (runs: 9.00 ms, 900 µs, 1.50 ms) | **met** |"
        ),
        "{targets}"
    );
}

#[test]
fn results_without_repeats_read_as_one_run() {
    let mut one = run("webhook", 0, 2000, 2000.0, 3000.0);
    let fields = one.as_object_mut().unwrap();
    // Results from before repeats and reconnects were recorded.
    fields.remove("repeat");
    fields.remove("reconnects");
    let tls = load_results(None, vec![one]);
    assert_eq!(tls.repeats, 1);
    assert_eq!(
        find_run(&tls, "webhook", Proto::H1, 2000)
            .unwrap()
            .run
            .latency
            .p99_us,
        3000.0
    );
    let block = tables::tls_block(Some(&tls));
    assert!(
        !block.contains("runs:") && !block.contains("ran 1 times"),
        "{block}"
    );
    assert!(tables::targets_block(None, Some(&tls), None).contains("| 3.00 ms | **missed** |"));
}

#[test]
fn the_budget_is_where_the_ratio_curve_crosses_the_target() {
    let curve = [(0.0, 1.0), (4.0, 0.8), (8.0, 0.64), (12.0, 0.5)];
    assert!((work_at(&curve, 0.6).unwrap() - 9.142_857).abs() < 1e-3);
    assert_eq!(work_at(&curve, 0.8), Some(4.0));
    assert_eq!(work_at(&curve, 0.4), None);

    let mut runs = Vec::new();
    // Repeat 1 ran on a slower machine: its ratios, not its throughputs, are compared.
    for (repeat, scale) in [(0, 1.0), (1, 0.5), (2, 1.0)] {
        for (server, work, throughput) in [
            ("ceiling", 0, 1000.0),
            ("ceiling", 4, 800.0),
            ("ceiling", 8, 640.0),
            ("ceiling", 12, 500.0),
            ("webhook", 0, 570.0),
        ] {
            let mut r = run(server, repeat, 0, throughput * scale, 0.0);
            if work > 0 {
                r["work_us"] = work.into();
            }
            runs.push(r);
        }
    }
    let decision: Vec<Benchmark> = serde_json::from_value(json!([{
        "id": "router/seed-agent/pools=1", "group": "router",
        "median_ns": 16000.0, "low_ns": 15000.0, "high_ns": 17000.0, "bytes": null,
    }]))
    .unwrap();
    let block = budget::budget_block(Some(&load_results(Some(3), runs)), Some(&decision));
    assert!(
        block.contains("| ceiling + 8 µs of CPU | 640/s | 0.64 (runs: 0.64, 0.64, 0.64) |"),
        "{block}"
    );
    assert!(
        block.contains("leaves a decision **9.1 µs** of CPU time per answer"),
        "{block}"
    );
    assert!(
        block.contains("The webhook's ratio, 0.57, is the ceiling's with 10.0 µs added; in process its answer takes 16.0 µs"),
        "{block}"
    );
    assert!(!block.contains("HTTP/2"), "{block}");
}

#[test]
fn missing_results_are_not_measured_and_broken_ones_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let results = Results::read(dir.path(), None).unwrap();
    let doc = "<!-- BEGIN GENERATED: machine -->\n<!-- END GENERATED: machine -->\n\
               <!-- BEGIN GENERATED: targets -->\n<!-- END GENERATED: targets -->\n\
               <!-- BEGIN GENERATED: decision -->\n<!-- END GENERATED: decision -->\n\
               <!-- BEGIN GENERATED: tls -->\n<!-- END GENERATED: tls -->\n\
               <!-- BEGIN GENERATED: budget -->\n<!-- END GENERATED: budget -->\n\
               <!-- BEGIN GENERATED: memory -->\n<!-- END GENERATED: memory -->\n\
               <!-- BEGIN GENERATED: cluster -->\n<!-- END GENERATED: cluster -->\n";
    let rendered = render(doc, &results).unwrap();
    assert_eq!(rendered.doc.matches(format::NOT_MEASURED).count(), 5);
    assert!(rendered.tls_plot.is_none() && rendered.cluster_plot.is_none());

    std::fs::write(dir.path().join("tls.json"), r#"{"runs": 3}"#).unwrap();
    let err = Results::read(dir.path(), None).err().unwrap();
    assert!(matches!(err, Error::Results { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("tls.json: not a results file of wi-load")
    );
}

/// BENCHMARKS.md and the plots are what the report makes of the saved results, byte for
/// byte: the document says what the results say.
#[test]
fn the_document_and_plots_are_the_saved_results_rendered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("results");
    let results = Results::read(&dir, None).unwrap();
    let doc_path = root.join("../BENCHMARKS.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let rendered = render(&doc, &results).unwrap();
    assert!(
        rendered.doc == doc,
        "BENCHMARKS.md is not the saved results rendered: run `bench/run.sh report`"
    );
    let saved = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert!(rendered.tls_plot.unwrap() == saved("tls-latency.svg"));
    assert!(rendered.cluster_plot.unwrap() == saved("pod-create-latency.svg"));
}
