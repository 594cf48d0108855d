//! `wi-load report`: BENCHMARKS.md's generated parts and plots, from the results of the
//! other commands (and criterion's estimates). Only the text between
//! `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->` is replaced; the rest
//! of the document is prose kept by hand.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Results of `wi-load tls` and `wi-load cluster`; the plots are written here too.
    #[arg(long, default_value = "bench/results")]
    pub results: PathBuf,
    /// criterion's output directory; its medians are saved to `<results>/decision.json`.
    /// Without it, the saved ones are used.
    #[arg(long)]
    pub criterion: Option<PathBuf>,
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub doc: PathBuf,
}

/// The targets of the issue that opened the benchmarks.
const DECISION_TARGET_US: f64 = 20.0;
const RATIO_TARGET: f64 = 0.6;
const P99_TARGET_US: f64 = 2_000.0;
const RSS_TARGET_KIB: f64 = 30.0 * 1024.0;
const ADDED_TARGET_MS: f64 = 2.0;

fn read(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Every criterion benchmark's median and 95% interval, in nanoseconds.
fn criterion_medians(dir: &Path) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n == "new") {
                    let (Some(b), Some(est)) = (
                        read(&p.join("benchmark.json")),
                        read(&p.join("estimates.json")),
                    ) else {
                        continue;
                    };
                    out.push(json!({
                        "id": b["full_id"],
                        "group": b["group_id"],
                        "median_ns": est["median"]["point_estimate"],
                        "low_ns": est["median"]["confidence_interval"]["lower_bound"],
                        "high_ns": est["median"]["confidence_interval"]["upper_bound"],
                        "bytes": b["throughput"]["Bytes"],
                    }));
                } else {
                    stack.push(p);
                }
            }
        }
    }
    if out.is_empty() {
        bail!("no criterion estimates under {}", dir.display());
    }
    // Whole path first, then its parts; within a group, by pod and pool count.
    let rank = |v: &Value| {
        let group = v["group"].as_str().unwrap_or("");
        let order = ["review", "router", "evaluate", "mutate", "index-build"];
        let pod = ["seed-agent", "12-containers", "300KiB"]
            .iter()
            .position(|p| v["id"].as_str().unwrap_or("").contains(p))
            .unwrap_or(9);
        (
            order
                .iter()
                .position(|g| *g == group)
                .unwrap_or(order.len()),
            pod,
            v["id"].as_str().unwrap_or("").to_string(),
        )
    };
    out.sort_by_key(rank);
    Ok(Value::Array(out))
}

fn replace_block(doc: &str, name: &str, body: &str) -> anyhow::Result<String> {
    let begin = format!("<!-- BEGIN GENERATED: {name} -->");
    let end = format!("<!-- END GENERATED: {name} -->");
    let start = doc
        .find(&begin)
        .with_context(|| format!("no {begin} in the document"))?;
    let stop = doc[start..]
        .find(&end)
        .map(|i| start + i)
        .with_context(|| format!("no {end} in the document"))?;
    Ok(format!(
        "{}{begin}\n{}\n{}",
        &doc[..start],
        body.trim_end(),
        &doc[stop..]
    ))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn us(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} ms", v / 1e3)
    } else if v >= 1_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0} µs")
    } else {
        format!("{v:.1} µs")
    }
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**missed**" }
}

const NOT_MEASURED: &str = "_Not measured yet: run `bench/run.sh`._";

fn machine_block(sources: &[(&str, &Value)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| results | date | commit | CPU | cores | memory | kernel | load |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (name, v) in sources {
        let m = &v["machine"];
        if m.is_null() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} GiB | {} | {} |",
            m["date"].as_str().unwrap_or(""),
            m["commit"].as_str().unwrap_or(""),
            m["cpu"].as_str().unwrap_or(""),
            m["cores"],
            m["memory_gib"],
            m["kernel"].as_str().unwrap_or(""),
            m["load_at_start"],
        );
    }
    if let Some(rustc) = sources
        .iter()
        .find_map(|(_, v)| v["machine"]["rustc"].as_str())
    {
        let _ = writeln!(
            s,
            "\nToolchain: `{rustc}`, release profile of the workspace (thin LTO)."
        );
    }
    s
}

fn decision_block(results: &Value) -> String {
    let Some(list) = results.as_array() else {
        return NOT_MEASURED.into();
    };
    let mut s = String::from(
        "| benchmark | median | 95% interval of the median | body |\n|---|---|---|---|\n",
    );
    for b in list {
        let bytes = b["bytes"]
            .as_u64()
            .map_or(String::new(), |n| format!("{:.1} KiB", n as f64 / 1024.0));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} – {} | {bytes} |",
            b["id"].as_str().unwrap_or(""),
            us(f(&b["median_ns"]) / 1e3),
            us(f(&b["low_ns"]) / 1e3),
            us(f(&b["high_ns"]) / 1e3),
        );
    }
    s
}

/// Every repeat of one scenario on one server (results without repeats: the one run).
fn repeats<'a>(tls: &'a Value, server: &str, proto: &str, rate: u64) -> Vec<&'a Value> {
    tls["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter(|r| {
                    r["server"] == server && r["proto"] == proto && r["rate"].as_u64() == Some(rate)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The item with the median `key`; with an even number, the lower of the two middle ones.
fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len().checked_sub(1)? / 2;
    items.into_iter().nth(middle)
}

/// The median repeat of a scenario: by throughput in the closed loop (rate 0), by p99 at a
/// fixed rate.
fn find_run<'a>(tls: &'a Value, server: &str, proto: &str, rate: u64) -> Option<&'a Value> {
    median_by(repeats(tls, server, proto, rate), |r| {
        if rate == 0 {
            f(&r["throughput"])
        } else {
            f(&r["latency"]["p99_us"])
        }
    })
}

/// A webhook run, the ceiling's run of the same repeat, and the webhook's throughput over
/// the ceiling's.
type Pair<'a> = (&'a Value, &'a Value, f64);

/// The closed-loop runs of the webhook and the ceiling, paired by repeat (each pair ran back
/// to back), with the webhook's throughput over the ceiling's, in the order of the repeats.
fn pairs<'a>(tls: &'a Value, proto: &str) -> Vec<Pair<'a>> {
    by_repeat(
        repeats(tls, "webhook", proto, 0),
        &repeats(tls, "ceiling", proto, 0),
    )
}

/// Each of `runs` with the run of `base` of the same repeat, and its throughput over that
/// one's; runs without such a base are left out.
fn by_repeat<'a>(runs: Vec<&'a Value>, base: &[&'a Value]) -> Vec<Pair<'a>> {
    runs.into_iter()
        .filter_map(|r| {
            let b = base.iter().find(|b| b["repeat"] == r["repeat"])?;
            Some((r, *b, f(&r["throughput"]) / f(&b["throughput"])))
        })
        .collect()
}

/// The closed-loop figure of a protocol: the pair with the median ratio, and every ratio in
/// the order of the repeats.
fn closed_loop<'a>(tls: &'a Value, proto: &str) -> Option<(Pair<'a>, Vec<f64>)> {
    let all = pairs(tls, proto);
    let ratios = all.iter().map(|p| p.2).collect();
    Some((median_by(all, |p| p.2)?, ratios))
}

/// "a, b, c" of a repeated figure, when there is more than one.
fn each(values: &[f64], show: impl Fn(f64) -> String) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let shown: Vec<String> = values.iter().map(|&v| show(v)).collect();
    format!(" (runs: {})", shown.join(", "))
}

fn p99s(tls: &Value, server: &str, proto: &str, rate: u64) -> Vec<f64> {
    repeats(tls, server, proto, rate)
        .iter()
        .map(|r| f(&r["latency"]["p99_us"]))
        .collect()
}

fn tls_block(tls: &Value) -> String {
    if tls.is_null() {
        return NOT_MEASURED.into();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "AdmissionReview of the seed's pod: {} bytes in, {} bytes out. HTTP/1.1: {} keep-alive connections; HTTP/2: one connection ({} streams in the closed loop).\n",
        tls["request_bytes"], tls["response_bytes"], tls["h1_connections"], tls["h2_streams"]
    );
    let n = tls["repeats"].as_u64().unwrap_or(1);
    if n > 1 {
        let _ = writeln!(
            s,
            "Every scenario ran {n} times, the two servers in turn each time. Closed loop: the pair of back-to-back runs with the median ratio; fixed rates: the run with the median p99 of each server.\n"
        );
    }
    let _ = writeln!(s, "Maximum throughput (closed loop):\n");
    let _ = writeln!(
        s,
        "| protocol | webhook | ceiling | ratio | webhook p50 / p99 | server CPU per request (webhook / ceiling) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for proto in ["HTTP/1.1", "HTTP/2"] {
        let Some(((w, c, ratio), ratios)) = closed_loop(tls, proto) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {proto} | {:.0}/s | {:.0}/s | {ratio:.2}{} | {} / {} | {} / {} |",
            f(&w["throughput"]),
            f(&c["throughput"]),
            each(&ratios, |r| format!("{r:.2}")),
            us(f(&w["latency"]["p50_us"])),
            us(f(&w["latency"]["p99_us"])),
            us(f(&w["server_cpu_us_per_request"])),
            us(f(&c["server_cpu_us_per_request"])),
        );
    }
    let _ = writeln!(
        s,
        "\nLatency at fixed rates (open loop, from each request's scheduled send time):\n"
    );
    let _ = writeln!(
        s,
        "| protocol | rate | server | achieved | p50 | p99 | p99.9 | max | errors / dropped / reconnects |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    // Each server's scenarios at fixed rates, by protocol and rate; a row for the median repeat.
    let mut scenarios: Vec<(&str, u64, &str)> = Vec::new();
    for r in tls["runs"].as_array().into_iter().flatten() {
        let key = (
            r["proto"].as_str().unwrap_or(""),
            r["rate"].as_u64().unwrap_or(0),
            r["server"].as_str().unwrap_or(""),
        );
        if r["mode"] == "open" && !scenarios.contains(&key) {
            scenarios.push(key);
        }
    }
    scenarios.sort_by_key(|&(proto, rate, _)| (proto, rate));
    for (proto, rate, server) in scenarios {
        let Some(r) = find_run(tls, server, proto, rate) else {
            continue;
        };
        let l = &r["latency"];
        let _ = writeln!(
            s,
            "| {proto} | {rate}/s | {server} | {:.0}/s | {} | {}{} | {} | {} | {} / {} / {} |",
            f(&r["throughput"]),
            us(f(&l["p50_us"])),
            us(f(&l["p99_us"])),
            each(&p99s(tls, server, proto, rate), us),
            us(f(&l["p999_us"])),
            us(f(&l["max_us"])),
            r["errors"],
            r["dropped"],
            r["reconnects"].as_u64().unwrap_or(0),
        );
    }
    s
}

/// The work a decision may cost for `ratio`, on a curve of (µs of work, ratio to the plain
/// ceiling) sorted by work: interpolated between the two points around it; `None` when the
/// curve does not come down to `ratio`.
fn work_at(curve: &[(f64, f64)], ratio: f64) -> Option<f64> {
    curve.windows(2).find_map(|w| {
        let ((w0, r0), (w1, r1)) = (w[0], w[1]);
        (r0 >= ratio && ratio >= r1 && r0 > r1).then(|| w0 + (r0 - ratio) / (r0 - r1) * (w1 - w0))
    })
}

/// One server of `wi-load budget` in one protocol: its runs by repeat.
fn budget_runs<'a>(budget: &'a Value, proto: &str, server: &str, work: u64) -> Vec<&'a Value> {
    repeats(budget, server, proto, 0)
        .into_iter()
        .filter(|r| work_of(r) == work)
        .collect()
}

/// The CPU time a run's server added per answer (absent: none).
fn work_of(run: &Value) -> u64 {
    run["work_us"].as_u64().unwrap_or(0)
}

/// A server's throughput over the plain ceiling's in the same repeat, for every repeat.
fn budget_ratios(budget: &Value, proto: &str, server: &str, work: u64) -> Vec<f64> {
    by_repeat(
        budget_runs(budget, proto, server, work),
        &budget_runs(budget, proto, "ceiling", 0),
    )
    .into_iter()
    .map(|p| p.2)
    .collect()
}

/// A criterion benchmark's median, in µs.
fn criterion_us(decision: &Value, id: &str) -> Option<f64> {
    decision
        .as_array()?
        .iter()
        .find(|b| b["id"] == id)
        .map(|b| f(&b["median_ns"]) / 1e3)
}

fn median(values: &[f64]) -> f64 {
    median_by(values.to_vec(), |v| *v).unwrap_or(f64::NAN)
}

fn budget_block(budget: &Value, decision: &Value) -> String {
    if budget.is_null() {
        return NOT_MEASURED.into();
    }
    let mut works: Vec<u64> = budget["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["server"] == "ceiling")
        .map(work_of)
        .collect();
    works.sort_unstable();
    works.dedup();
    let router = criterion_us(decision, "router/seed-agent/pools=1");
    let mut s = String::new();
    for proto in ["HTTP/1.1", "HTTP/2"] {
        if budget_runs(budget, proto, "ceiling", 0).is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {proto}, closed loop | answers/s | ratio to the ceiling | server CPU per answer |\n|---|---|---|---|"
        );
        let row = |s: &mut String, name: String, server: &str, work: u64| {
            let runs = budget_runs(budget, proto, server, work);
            let through: Vec<f64> = runs.iter().map(|r| f(&r["throughput"])).collect();
            let cpu: Vec<f64> = runs
                .iter()
                .map(|r| f(&r["server_cpu_us_per_request"]))
                .collect();
            let ratios = budget_ratios(budget, proto, server, work);
            let _ = writeln!(
                s,
                "| {name} | {:.0}/s | {:.2}{} | {} |",
                median(&through),
                median(&ratios),
                each(&ratios, |r| format!("{r:.2}")),
                us(median(&cpu)),
            );
            median(&ratios)
        };
        let mut curve = Vec::new();
        for &work in &works {
            let name = match work {
                0 => "ceiling".to_string(),
                w => format!("ceiling + {w} µs of CPU"),
            };
            curve.push((work as f64, row(&mut s, name, "ceiling", work)));
        }
        let floor = (!budget_runs(budget, proto, "floor", 0).is_empty()).then(|| {
            row(
                &mut s,
                "floor: the webhook, its decision taken out".into(),
                "floor",
                0,
            )
        });
        let webhook = row(&mut s, "webhook".into(), "webhook", 0);
        let last = works.last().copied().unwrap_or(0);
        let show =
            |w: Option<f64>| w.map_or(format!("more than {last} µs"), |w| format!("{w:.1} µs"));
        let _ = writeln!(
            s,
            "\n{proto}: {RATIO_TARGET} of the ceiling leaves a decision **{}** of CPU time per answer. \
             The webhook's ratio, {webhook:.2}, is the ceiling's with {} added{}.\n",
            show(work_at(&curve, RATIO_TARGET)),
            show(work_at(&curve, webhook)),
            router.map_or(String::new(), |r| format!(
                "; in process its answer takes {} (`router/seed-agent/pools=1`, section 1)",
                us(r)
            )),
        );
        if let Some(floor) = floor {
            // The floor's own work (reading the review, encoding, metrics, the line), as CPU
            // time added to the ceiling; what is left of the budget is the decision's.
            let floor_work = work_at(&curve, floor).or((floor >= 1.0).then_some(0.0));
            let left = match (work_at(&curve, RATIO_TARGET), floor_work) {
                (Some(budget), Some(floor)) if budget > floor => {
                    format!("leaves the decision itself {:.1} µs", budget - floor)
                }
                (Some(_), Some(_)) => "leaves the decision itself nothing".to_string(),
                _ => "leaves the decision itself what the budget has over it".to_string(),
            };
            let _ = writeln!(
                s,
                "The floor, the webhook answering the same bytes without deciding, reaches {floor:.2}: \
                 reading the review, encoding the answer, the metrics and the admission line cost as \
                 much as {} of CPU time would, which {left}.\n",
                show(floor_work),
            );
        }
    }
    s
}

fn memory_block(cluster: &Value) -> String {
    if cluster.is_null() {
        return NOT_MEASURED.into();
    }
    let m = &cluster["memory_kib"];
    let o = &cluster["objects"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`wi-webhook serve` (release build) against kube-apiserver {}; resident set (`VmRSS`) of the process.\n",
        cluster["apiserver"].as_str().unwrap_or("")
    );
    let _ = writeln!(s, "| state | resident | notes |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| idle | {} | {} ServiceAccounts cached, the seed's AgentPool |",
        mib(f(&m["idle"])),
        o["idle_cached_service_accounts"]
    );
    let _ = writeln!(
        s,
        "| caches filled by the watch | {} | {} ServiceAccounts and {} AgentPools created while it ran |",
        mib(f(&m["filled_by_watch"])),
        o["service_accounts"],
        o["agent_pools"]
    );
    let _ = writeln!(
        s,
        "| caches filled at start | {} | restarted: {} ServiceAccounts, {} AgentPools listed; peak while listing {} |",
        mib(f(&m["filled_at_start"])),
        o["cached_service_accounts"],
        o["cached_agent_pools"],
        mib(f(&m["peak_filling_at_start"]))
    );
    let _ = writeln!(
        s,
        "| under load | {} | largest sample (every 50 ms) during the load below; peak since start {} |",
        mib(f(&m["under_load_max"])),
        mib(f(&m["peak_since_start"]))
    );
    let after = |key: &str, cached: &str, total: &Value| match o[key].as_f64() {
        Some(secs) => format!("all {total} after {secs:.1} s"),
        None => format!("only {} of {total} within the wait", o[cached]),
    };
    let _ = writeln!(
        s,
        "\nWhile the webhook ran, the objects were created in {:.1} s; its caches had {} ServiceAccounts ({}) and {} AgentPools ({}), counted from the first create.",
        f(&o["created_in_seconds"]),
        o["service_accounts"],
        after(
            "all_service_accounts_cached_after_seconds",
            "watch_cached_service_accounts",
            &json!(o["service_accounts"].as_u64().unwrap_or(0) + 1)
        ),
        o["agent_pools"],
        after(
            "all_agent_pools_indexed_after_seconds",
            "watch_cached_agent_pools",
            &o["agent_pools"]
        ),
    );
    if let Some(runs) = cluster["load"].as_array() {
        let _ = writeln!(
            s,
            "\nThe load, straight at the webhook with its full caches:\n"
        );
        let _ = writeln!(
            s,
            "| protocol | mode | throughput | p50 | p99 | p99.9 | server CPU per request |\n|---|---|---|---|---|---|---|"
        );
        for r in runs {
            let run = &r["run"];
            let mode = if run["mode"] == "open" {
                format!("open, {}/s", run["rate"])
            } else {
                format!("closed, {} connections", run["connections"])
            };
            let _ = writeln!(
                s,
                "| {} | {mode} | {:.0}/s | {} | {} | {} | {} |",
                run["proto"].as_str().unwrap_or(""),
                f(&run["throughput"]),
                us(f(&run["latency"]["p50_us"])),
                us(f(&run["latency"]["p99_us"])),
                us(f(&run["latency"]["p999_us"])),
                us(f(&r["server_cpu_us_per_request"])),
            );
        }
    }
    s
}

fn cluster_block(cluster: &Value) -> String {
    if cluster.is_null() {
        return NOT_MEASURED.into();
    }
    let p = &cluster["pod_create"];
    let (w, wo) = (&p["with_webhook"], &p["without_webhook"]);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} pods created on each side, one at a time, the sides in turn: the seed's agent pod in `ado-agents-omtest1` (mutated by the webhook) and in a namespace labelled `wi-webhook.dev/ignore: \"true\"` (skipped by the webhook configurations), on the same API server{}.\n",
        p["pods_each"],
        if p["with_canned_webhook"].is_null() {
            ""
        } else {
            "; and, as a ceiling, in a third namespace the webhook skips, served by an echo server answering the webhook's own patch for this pod with only the request's uid read (`wi-load serve --kind echo`, the same stack as section 2's ceiling): what calling any webhook that answers this patch costs the API server"
        }
    );
    let _ = writeln!(s, "| | p50 | p90 | p99 | max |\n|---|---|---|---|---|");
    let canned = &p["with_canned_webhook"];
    let mut sides = vec![("with the webhook", w), ("without", wo)];
    if !canned.is_null() {
        sides.push(("with the echo webhook (ceiling)", canned));
    }
    for (name, v) in sides {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            us(f(&v["p50_us"])),
            us(f(&v["p90_us"])),
            us(f(&v["p99_us"])),
            us(f(&v["max_us"]))
        );
    }
    let _ = writeln!(
        s,
        "| **added** | **{:+.2} ms** | {:+.2} ms | {:+.2} ms | |",
        f(&p["added_p50_ms"]),
        (f(&w["p90_us"]) - f(&wo["p90_us"])) / 1e3,
        f(&p["added_p99_ms"])
    );
    if !canned.is_null() {
        let _ = writeln!(
            s,
            "| added by the echo webhook | {:+.2} ms | {:+.2} ms | {:+.2} ms | |",
            (f(&canned["p50_us"]) - f(&wo["p50_us"])) / 1e3,
            (f(&canned["p90_us"]) - f(&wo["p90_us"])) / 1e3,
            (f(&canned["p99_us"]) - f(&wo["p99_us"])) / 1e3
        );
    }
    let _ = writeln!(
        s,
        "\nCPU time of the webhook process during the creates, per pod created on its side: {} (its background work included: the AgentPool watch was still writing statuses after the restart).",
        us(f(&p["webhook_cpu_us_per_create"]))
    );
    let own = &p["webhook_logged_latency"];
    if !p["apiserver_webhook_calls"].is_null() {
        let _ = writeln!(
            s,
            "\nWhere the added time goes: the API server timed its {} calls to the webhook at {} on average (its `apiserver_admission_webhook_admission_duration_seconds`: the AdmissionReview built and encoded, TLS, HTTP/2, the decision, the answer decoded and the patch applied); the webhook logged {} admissions at p50 {}, p99 {} (body received to answer written). The rest of the added time is the API server's own work around the call, defaulting, validating and storing the larger pod{}",
            f(&p["apiserver_webhook_calls"]) as u64,
            us(f(&p["apiserver_webhook_call_mean_us"])),
            own["count"],
            us(f(&own["p50_us"])),
            us(f(&own["p99_us"])),
            if canned.is_null() {
                ".".to_string()
            } else {
                format!(
                    "; the echo webhook, which reads nothing of the pod, adds {:+.2} ms at p50 where the webhook adds {:+.2} ms: the webhook's own share of the added time is the difference, {:+.2} ms.",
                    (f(&canned["p50_us"]) - f(&wo["p50_us"])) / 1e3,
                    f(&p["added_p50_ms"]),
                    (f(&w["p50_us"]) - f(&canned["p50_us"])) / 1e3
                )
            }
        );
    }
    s
}

fn targets_block(decision: &Value, tls: &Value, cluster: &Value) -> String {
    let mut s = String::from("| target | measured | |\n|---|---|---|\n");
    let seed = criterion_us(decision, "review/seed-agent/pools=1");
    match seed {
        Some(v) => {
            let _ = writeln!(
                s,
                "| in-process decision for the seed's pod (`review/seed-agent/pools=1`): median under {DECISION_TARGET_US:.0} µs | {} | {} |",
                us(v),
                verdict(v < DECISION_TARGET_US)
            );
        }
        None => {
            let _ = writeln!(
                s,
                "| in-process decision for the seed's pod: median under {DECISION_TARGET_US:.0} µs | not measured | |"
            );
        }
    }
    for proto in ["HTTP/1.1", "HTTP/2"] {
        if let Some(((w, c, ratio), ratios)) = closed_loop(tls, proto) {
            let _ = writeln!(
                s,
                "| over TLS, {proto}: at least {RATIO_TARGET} of the ceiling's throughput | {ratio:.2} ({:.0}/s against {:.0}/s){} | {} |",
                f(&w["throughput"]),
                f(&c["throughput"]),
                each(&ratios, |r| format!("{r:.2}")),
                verdict(ratio >= RATIO_TARGET)
            );
        }
        if let Some(w) = find_run(tls, "webhook", proto, 2000) {
            let p99 = f(&w["latency"]["p99_us"]);
            let errors = repeats(tls, "webhook", proto, 2000)
                .iter()
                .any(|r| r["errors"] != 0);
            let _ = writeln!(
                s,
                "| over TLS, {proto}: p99 under 2 ms at 2,000/s | {}{} | {} |",
                us(p99),
                each(&p99s(tls, "webhook", proto, 2000), us),
                verdict(p99 < P99_TARGET_US && !errors)
            );
        }
    }
    if !cluster.is_null() {
        let m = &cluster["memory_kib"];
        let filled = f(&m["filled_by_watch"]).max(f(&m["filled_at_start"]));
        let _ = writeln!(
            s,
            "| resident memory under 30 MiB with {} ServiceAccounts and {} AgentPools cached | {} (idle {}, under load {}) | {} |",
            cluster["objects"]["service_accounts"],
            cluster["objects"]["agent_pools"],
            mib(filled),
            mib(f(&m["idle"])),
            mib(f(&m["under_load_max"])),
            verdict(filled < RSS_TARGET_KIB)
        );
        let added = f(&cluster["pod_create"]["added_p50_ms"]);
        let _ = writeln!(
            s,
            "| added pod-creation latency through the API server: under 2 ms median | {added:+.2} ms | {} |",
            verdict(added < ADDED_TARGET_MS)
        );
    } else {
        let _ = writeln!(s, "| memory and pod-creation latency | not measured | |");
    }
    s
}

// ---- plots -------------------------------------------------------------------------------

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

fn points(summary: &Value) -> Vec<(f64, f64)> {
    summary["distribution"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                .filter(|(_, v)| *v > 0.0)
                .collect()
        })
        .unwrap_or_default()
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

fn tls_plot(tls: &Value) -> Option<String> {
    let mut rates: Vec<u64> = tls["runs"]
        .as_array()?
        .iter()
        .filter_map(|r| r["rate"].as_u64().filter(|&r| r > 0))
        .collect();
    rates.sort_unstable();
    rates.dedup();
    let panels: Vec<Panel> = rates
        .iter()
        .map(|&rate| Panel {
            title: format!("{rate} requests/s"),
            series: [
                ("webhook", "HTTP/1.1", "#1f77b4", false),
                ("webhook", "HTTP/2", "#d62728", false),
                ("ceiling", "HTTP/1.1", "#1f77b4", true),
                ("ceiling", "HTTP/2", "#d62728", true),
            ]
            .iter()
            .filter_map(|&(server, proto, color, dashed)| {
                let run = find_run(tls, server, proto, rate)?;
                Some(Series {
                    label: format!("{server}, {proto}"),
                    color,
                    dashed,
                    points: points(&run["latency"]),
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

fn cluster_plot(cluster: &Value) -> Option<String> {
    let p = &cluster["pod_create"];
    if p.is_null() {
        return None;
    }
    let mut series = vec![
        Series {
            label: "with the webhook".into(),
            color: "#d62728",
            dashed: false,
            points: points(&p["with_webhook"]),
        },
        Series {
            label: "without (namespace skipped)".into(),
            color: "#1f77b4",
            dashed: true,
            points: points(&p["without_webhook"]),
        },
    ];
    if !p["with_canned_webhook"].is_null() {
        series.push(Series {
            label: "with the echo webhook (ceiling)".into(),
            color: "#7f7f7f",
            dashed: true,
            points: points(&p["with_canned_webhook"]),
        });
    }
    let panel = Panel {
        title: "pod creation through kube-apiserver".into(),
        series,
    };
    Some(svg("Pod creation latency", &[panel]))
}

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.results)?;
    let decision_path = args.results.join("decision.json");
    let decision = match &args.criterion {
        Some(dir) => {
            let list = criterion_medians(dir)?;
            let saved = json!({"machine": crate::procfs::machine(), "benchmarks": list});
            std::fs::write(&decision_path, serde_json::to_vec_pretty(&saved)?)?;
            saved
        }
        None => read(&decision_path).unwrap_or(Value::Null),
    };
    let tls = read(&args.results.join("tls.json")).unwrap_or(Value::Null);
    let cluster = read(&args.results.join("cluster.json")).unwrap_or(Value::Null);
    let budget = read(&args.results.join("budget.json")).unwrap_or(Value::Null);

    let mut doc = std::fs::read_to_string(&args.doc)
        .with_context(|| format!("reading {}", args.doc.display()))?;
    doc = replace_block(
        &doc,
        "machine",
        &machine_block(&[
            ("decision (criterion)", &decision),
            ("TLS", &tls),
            ("budget", &budget),
            ("control plane", &cluster),
        ]),
    )?;
    doc = replace_block(
        &doc,
        "targets",
        &targets_block(&decision["benchmarks"], &tls, &cluster),
    )?;
    doc = replace_block(&doc, "decision", &decision_block(&decision["benchmarks"]))?;
    doc = replace_block(&doc, "tls", &tls_block(&tls))?;
    doc = replace_block(
        &doc,
        "budget",
        &budget_block(&budget, &decision["benchmarks"]),
    )?;
    doc = replace_block(&doc, "memory", &memory_block(&cluster))?;
    doc = replace_block(&doc, "cluster", &cluster_block(&cluster))?;
    std::fs::write(&args.doc, doc)?;
    if let Some(svg) = tls_plot(&tls) {
        std::fs::write(args.results.join("tls-latency.svg"), svg)?;
    }
    if let Some(svg) = cluster_plot(&cluster) {
        std::fs::write(args.results.join("pod-create-latency.svg"), svg)?;
    }
    eprintln!(
        "rewrote {} and the plots in {}",
        args.doc.display(),
        args.results.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_generated_block_is_replaced() {
        let doc = "intro\n<!-- BEGIN GENERATED: x -->\nold\n<!-- END GENERATED: x -->\nprose\n";
        let out = replace_block(doc, "x", "new\n").unwrap();
        assert_eq!(
            out,
            "intro\n<!-- BEGIN GENERATED: x -->\nnew\n<!-- END GENERATED: x -->\nprose\n"
        );
        assert!(replace_block(doc, "y", "z").is_err());
    }

    #[test]
    fn a_plot_is_an_svg_with_one_line_per_series() {
        let summary = json!({"distribution": [[0.0, 100.0], [90.0, 150.0], [100.0, 900.0]]});
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

    fn run(server: &str, repeat: u64, rate: u64, throughput: f64, p99_us: f64) -> Value {
        json!({
            "server": server, "proto": "HTTP/1.1", "repeat": repeat, "rate": rate,
            "mode": if rate == 0 { "closed" } else { "open" },
            "throughput": throughput, "errors": 0, "dropped": 0, "reconnects": 0,
            "latency": {"p50_us": 100.0, "p99_us": p99_us, "p999_us": 0.0, "max_us": 0.0},
            "server_cpu_us_per_request": 1.0,
        })
    }

    #[test]
    fn repeated_runs_report_their_median_and_every_repeat() {
        let tls = json!({
            "repeats": 3,
            "runs": [
                // Closed loop: the ratios by pair are 0.5, 0.8 and 0.6; their median is 0.6,
                // where the median throughputs (50/s against 100/s) would say 0.5.
                run("webhook", 0, 0, 50.0, 1.0), run("ceiling", 0, 0, 100.0, 1.0),
                run("ceiling", 1, 0, 50.0, 1.0), run("webhook", 1, 0, 40.0, 1.0),
                run("webhook", 2, 0, 60.0, 1.0), run("ceiling", 2, 0, 100.0, 1.0),
                // At 2,000/s: one stalled repeat (9 ms) does not make the figure.
                run("webhook", 0, 2000, 2000.0, 9000.0), run("ceiling", 0, 2000, 2000.0, 800.0),
                run("ceiling", 1, 2000, 2000.0, 700.0), run("webhook", 1, 2000, 2000.0, 900.0),
                run("webhook", 2, 2000, 2000.0, 1500.0), run("ceiling", 2, 2000, 2000.0, 600.0),
            ],
        });
        let ((w, c, ratio), ratios) = closed_loop(&tls, "HTTP/1.1").unwrap();
        assert_eq!(ratios, vec![0.5, 0.8, 0.6]);
        assert_eq!(
            (w["repeat"].as_u64(), c["repeat"].as_u64(), ratio),
            (Some(2), Some(2), 0.6)
        );
        let w = find_run(&tls, "webhook", "HTTP/1.1", 2000).unwrap();
        assert_eq!(w["repeat"], 2);
        assert_eq!(
            find_run(&tls, "webhook", "HTTP/1.1", 0).unwrap()["repeat"],
            0
        );
        assert!(find_run(&tls, "webhook", "HTTP/2", 0).is_none());

        let block = tls_block(&tls);
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

        let targets = targets_block(&Value::Null, &tls, &Value::Null);
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
        one.as_object_mut().unwrap().remove("repeat");
        let tls = json!({"runs": [one]});
        assert_eq!(
            find_run(&tls, "webhook", "HTTP/1.1", 2000).unwrap()["latency"]["p99_us"],
            3000.0
        );
        let block = tls_block(&tls);
        assert!(
            !block.contains("runs:") && !block.contains("ran 1 times"),
            "{block}"
        );
        assert!(
            targets_block(&Value::Null, &tls, &Value::Null).contains("| 3.00 ms | **missed** |")
        );
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
        let decision = json!([{"id": "router/seed-agent/pools=1", "median_ns": 16000.0}]);
        let block = budget_block(&json!({ "runs": runs }), &decision);
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
}
