//! The blocks of the machine, the in-process decision, TLS throughput and latency, and the
//! targets.

use std::fmt::Write as _;

use super::format::{NOT_MEASURED, as_saved, each, mib, us, verdict};
use super::select::{closed_loop, criterion_us, find_run, p99s, repeats};
use crate::load::Proto;
use crate::procfs::Machine;
use crate::results::{Benchmark, ClusterResults, LoadResults, Loop};

/// The targets of the issue that opened the benchmarks.
const DECISION_TARGET_US: f64 = 20.0;
pub const RATIO_TARGET: f64 = 0.6;
const P99_TARGET_US: f64 = 2_000.0;
const RSS_TARGET_KIB: f64 = 30.0 * 1024.0;
const ADDED_TARGET_MS: f64 = 2.0;

/// The protocols, in the order of the tables.
pub const PROTOS: [Proto; 2] = [Proto::H1, Proto::H2];

/// Where each results file was measured; results without a machine have no row.
pub fn machine_block(sources: &[(&str, Option<&Machine>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| results | date | commit | CPU | cores | memory | kernel | load |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for (name, m) in sources {
        let Some(m) = m else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} | {} GiB | {} | {} |",
            m.date,
            m.commit,
            m.cpu,
            m.cores,
            as_saved(m.memory_gib),
            m.kernel,
            as_saved(m.load_at_start),
        );
    }
    if let Some(rustc) = sources
        .iter()
        .find_map(|(_, m)| Some(m.as_ref()?.rustc.as_str()))
    {
        let _ = writeln!(
            s,
            "\nToolchain: `{rustc}`, release profile of the workspace (thin LTO)."
        );
    }
    s
}

pub fn decision_block(benchmarks: Option<&[Benchmark]>) -> String {
    let Some(list) = benchmarks else {
        return NOT_MEASURED.into();
    };
    let mut s = String::from(
        "| benchmark | median | 95% interval of the median | body |\n|---|---|---|---|\n",
    );
    for b in list {
        let bytes = b
            .bytes
            .map_or(String::new(), |n| format!("{:.1} KiB", n as f64 / 1024.0));
        let _ = writeln!(
            s,
            "| `{}` | {} | {} – {} | {bytes} |",
            b.id,
            us(b.median_ns / 1e3),
            us(b.low_ns / 1e3),
            us(b.high_ns / 1e3),
        );
    }
    s
}

pub fn tls_block(tls: Option<&LoadResults>) -> String {
    let Some(tls) = tls else {
        return NOT_MEASURED.into();
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "AdmissionReview of the seed's pod: {} bytes in, {} bytes out. HTTP/1.1: {} keep-alive connections; HTTP/2: one connection ({} streams in the closed loop).\n",
        tls.request_bytes, tls.response_bytes, tls.h1_connections, tls.h2_streams
    );
    let n = tls.repeats;
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
    for proto in PROTOS {
        let Some(((w, c, ratio), ratios)) = closed_loop(tls, proto) else {
            continue;
        };
        let _ = writeln!(
            s,
            "| {} | {:.0}/s | {:.0}/s | {ratio:.2}{} | {} / {} | {} / {} |",
            proto.label(),
            w.run.throughput,
            c.run.throughput,
            each(&ratios, |r| format!("{r:.2}")),
            us(w.run.latency.p50_us),
            us(w.run.latency.p99_us),
            us(w.server_cpu_us_per_request),
            us(c.server_cpu_us_per_request),
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
    let mut scenarios: Vec<(Proto, u64, &str)> = Vec::new();
    for r in &tls.runs {
        let key = (r.run.proto, r.run.rate, r.server.as_str());
        if r.run.mode == Loop::Open && !scenarios.contains(&key) {
            scenarios.push(key);
        }
    }
    scenarios.sort_by_key(|&(proto, rate, _)| (proto.label(), rate));
    for (proto, rate, server) in scenarios {
        let Some(r) = find_run(tls, server, proto, rate) else {
            continue;
        };
        let l = &r.run.latency;
        let _ = writeln!(
            s,
            "| {} | {rate}/s | {server} | {:.0}/s | {} | {}{} | {} | {} | {} / {} / {} |",
            proto.label(),
            r.run.throughput,
            us(l.p50_us),
            us(l.p99_us),
            each(&p99s(tls, server, proto, rate), us),
            us(l.p999_us),
            us(l.max_us),
            r.run.errors,
            r.run.dropped,
            r.run.reconnects,
        );
    }
    s
}

pub fn targets_block(
    decision: Option<&[Benchmark]>,
    tls: Option<&LoadResults>,
    cluster: Option<&ClusterResults>,
) -> String {
    let mut s = String::from("| target | measured | |\n|---|---|---|\n");
    match criterion_us(decision, "review/seed-agent/pools=1") {
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
    for (tls, proto) in tls
        .into_iter()
        .flat_map(|tls| PROTOS.map(|proto| (tls, proto)))
    {
        let label = proto.label();
        if let Some(((w, c, ratio), ratios)) = closed_loop(tls, proto) {
            let _ = writeln!(
                s,
                "| over TLS, {label}: at least {RATIO_TARGET} of the ceiling's throughput | {ratio:.2} ({:.0}/s against {:.0}/s){} | {} |",
                w.run.throughput,
                c.run.throughput,
                each(&ratios, |r| format!("{r:.2}")),
                verdict(ratio >= RATIO_TARGET)
            );
        }
        if let Some(w) = find_run(tls, "webhook", proto, 2000) {
            let p99 = w.run.latency.p99_us;
            let errors = repeats(tls, "webhook", proto, 2000)
                .iter()
                .any(|r| r.run.errors != 0);
            let _ = writeln!(
                s,
                "| over TLS, {label}: p99 under 2 ms at 2,000/s | {}{} | {} |",
                us(p99),
                each(&p99s(tls, "webhook", proto, 2000), us),
                verdict(p99 < P99_TARGET_US && !errors)
            );
        }
    }
    match cluster {
        Some(cluster) => {
            let m = &cluster.memory_kib;
            let filled = (m.filled_by_watch as f64).max(m.filled_at_start as f64);
            let _ = writeln!(
                s,
                "| resident memory under 30 MiB with {} ServiceAccounts and {} AgentPools cached | {} (idle {}, under load {}) | {} |",
                cluster.objects.service_accounts,
                cluster.objects.agent_pools,
                mib(filled),
                mib(m.idle as f64),
                mib(m.under_load_max as f64),
                verdict(filled < RSS_TARGET_KIB)
            );
            // A memory-only run has no pod creates: no figure, and the target is missed.
            let added = cluster
                .pod_create
                .as_ref()
                .map_or(f64::NAN, |p| p.added_p50_ms);
            let _ = writeln!(
                s,
                "| added pod-creation latency through the API server: under 2 ms median | {added:+.2} ms | {} |",
                verdict(added < ADDED_TARGET_MS)
            );
        }
        None => {
            let _ = writeln!(s, "| memory and pod-creation latency | not measured | |");
        }
    }
    s
}
