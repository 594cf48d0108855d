//! The blocks of `wi-load cluster`: the webhook's memory with full caches, and what it adds
//! to pod creation through the API server.

use std::fmt::Write as _;

use super::format::{NOT_MEASURED, mib, us};
use crate::results::Loop;
use crate::results::{ClusterResults, PodCreate};

pub fn memory_block(cluster: Option<&ClusterResults>) -> String {
    let Some(cluster) = cluster else {
        return NOT_MEASURED.into();
    };
    let m = &cluster.memory_kib;
    let o = &cluster.objects;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "`wi-webhook serve` (release build) against kube-apiserver {}; resident set (`VmRSS`) of the process.\n",
        cluster.apiserver
    );
    let _ = writeln!(s, "| state | resident | notes |\n|---|---|---|");
    let _ = writeln!(
        s,
        "| idle | {} | {} ServiceAccounts cached, the seed's AgentPool |",
        mib(m.idle as f64),
        o.idle_cached_service_accounts
    );
    let _ = writeln!(
        s,
        "| caches filled by the watch | {} | {} ServiceAccounts and {} AgentPools created while it ran |",
        mib(m.filled_by_watch as f64),
        o.service_accounts,
        o.agent_pools
    );
    let _ = writeln!(
        s,
        "| caches filled at start | {} | restarted: {} ServiceAccounts, {} AgentPools listed; peak while listing {} |",
        mib(m.filled_at_start as f64),
        o.cached_service_accounts,
        o.cached_agent_pools,
        mib(m.peak_filling_at_start as f64)
    );
    let _ = writeln!(
        s,
        "| under load | {} | largest sample (every 50 ms) during the load below; peak since start {} |",
        mib(m.under_load_max as f64),
        mib(m.peak_since_start as f64)
    );
    let after = |seconds: Option<f64>, cached: u64, total: u64| match seconds {
        Some(secs) => format!("all {total} after {secs:.1} s"),
        None => format!("only {cached} of {total} within the wait"),
    };
    let _ = writeln!(
        s,
        "\nWhile the webhook ran, the objects were created in {:.1} s; its caches had {} ServiceAccounts ({}) and {} AgentPools ({}), counted from the first create.",
        o.created_in_seconds,
        o.service_accounts,
        // The seed's ServiceAccount besides the created ones.
        after(
            o.all_service_accounts_cached_after_seconds,
            o.watch_cached_service_accounts,
            o.service_accounts as u64 + 1
        ),
        o.agent_pools,
        after(
            o.all_agent_pools_indexed_after_seconds,
            o.watch_cached_agent_pools,
            o.agent_pools as u64
        ),
    );
    if let Some(runs) = &cluster.load {
        let _ = writeln!(
            s,
            "\nThe load, straight at the webhook with its full caches:\n"
        );
        let _ = writeln!(
            s,
            "| protocol | mode | throughput | p50 | p99 | p99.9 | server CPU per request |\n|---|---|---|---|---|---|---|"
        );
        for r in runs {
            let run = &r.run;
            let mode = if run.mode == Loop::Open {
                format!("open, {}/s", run.rate)
            } else {
                format!("closed, {} connections", run.connections)
            };
            let _ = writeln!(
                s,
                "| {} | {mode} | {:.0}/s | {} | {} | {} | {} |",
                run.proto.label(),
                run.throughput,
                us(run.latency.p50_us),
                us(run.latency.p99_us),
                us(run.latency.p999_us),
                us(r.server_cpu_us_per_request),
            );
        }
    }
    s
}

pub fn cluster_block(cluster: Option<&ClusterResults>) -> String {
    // A memory-only run has no pod creates.
    let Some(p) = cluster.and_then(|c| c.pod_create.as_ref()) else {
        return NOT_MEASURED.into();
    };
    let (w, wo) = (&p.with_webhook, &p.without_webhook);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} pods created on each side, one at a time, the sides in turn: the seed's agent pod in `ado-agents-omtest1` (mutated by the webhook) and in a namespace labelled `wi-webhook.dev/ignore: \"true\"` (skipped by the webhook configurations), on the same API server{}.\n",
        p.pods_each,
        if p.with_canned_webhook.is_none() {
            ""
        } else {
            "; and, as a ceiling, in a third namespace the webhook skips, served by an echo server answering the webhook's own patch for this pod with only the request's uid read (`wi-load serve --kind echo`, the same stack as section 2's ceiling): what calling any webhook that answers this patch costs the API server"
        }
    );
    let _ = writeln!(s, "| | p50 | p90 | p99 | max |\n|---|---|---|---|---|");
    let mut sides = vec![("with the webhook", w), ("without", wo)];
    if let Some(canned) = &p.with_canned_webhook {
        sides.push(("with the echo webhook (ceiling)", canned));
    }
    for (name, v) in sides {
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} | {} |",
            us(v.p50_us),
            us(v.p90_us),
            us(v.p99_us),
            us(v.max_us)
        );
    }
    let _ = writeln!(
        s,
        "| **added** | **{:+.2} ms** | {:+.2} ms | {:+.2} ms | |",
        p.added_p50_ms,
        (w.p90_us - wo.p90_us) / 1e3,
        p.added_p99_ms
    );
    if let Some(canned) = &p.with_canned_webhook {
        let _ = writeln!(
            s,
            "| added by the echo webhook | {:+.2} ms | {:+.2} ms | {:+.2} ms | |",
            (canned.p50_us - wo.p50_us) / 1e3,
            (canned.p90_us - wo.p90_us) / 1e3,
            (canned.p99_us - wo.p99_us) / 1e3
        );
    }
    let _ = writeln!(
        s,
        "\nCPU time of the webhook process during the creates, per pod created on its side: {} (its background work included: the AgentPool watch was still writing statuses after the restart).",
        us(p.webhook_cpu_us_per_create)
    );
    where_the_time_goes(&mut s, p);
    s
}

/// The API server's timing of its calls to the webhook next to the webhook's own, when the
/// results have both.
fn where_the_time_goes(s: &mut String, p: &PodCreate) {
    let (Some(calls), Some(mean_us), Some(own)) = (
        p.apiserver_webhook_calls,
        p.apiserver_webhook_call_mean_us,
        &p.webhook_logged_latency,
    ) else {
        return;
    };
    let (w, wo) = (&p.with_webhook, &p.without_webhook);
    let _ = writeln!(
        s,
        "\nWhere the added time goes: the API server timed its {} calls to the webhook at {} on average (its `apiserver_admission_webhook_admission_duration_seconds`: the AdmissionReview built and encoded, TLS, HTTP/2, the decision, the answer decoded and the patch applied); the webhook logged {} admissions at p50 {}, p99 {} (body received to answer written). The rest of the added time is the API server's own work around the call, defaulting, validating and storing the larger pod{}",
        calls as u64,
        us(mean_us),
        own.count,
        us(own.p50_us),
        us(own.p99_us),
        match &p.with_canned_webhook {
            None => ".".to_string(),
            Some(canned) => format!(
                "; the echo webhook, which reads nothing of the pod, adds {:+.2} ms at p50 where the webhook adds {:+.2} ms: the webhook's own share of the added time is the difference, {:+.2} ms.",
                (canned.p50_us - wo.p50_us) / 1e3,
                p.added_p50_ms,
                (w.p50_us - canned.p50_us) / 1e3
            ),
        }
    );
}
