//! The block of `wi-load budget`: the ratio to the ceiling as CPU time is added to its
//! answers, and what that leaves a decision.

use std::fmt::Write as _;

use super::format::{NOT_MEASURED, each, us};
use super::select::{budget_ratios, budget_runs, criterion_us, median, work_at};
use super::tables::{PROTOS, RATIO_TARGET};
use crate::load::Proto;
use crate::results::{Benchmark, LoadResults};

pub fn budget_block(budget: Option<&LoadResults>, decision: Option<&[Benchmark]>) -> String {
    let Some(budget) = budget else {
        return NOT_MEASURED.into();
    };
    let mut works: Vec<u64> = budget
        .runs
        .iter()
        .filter(|r| r.server == "ceiling")
        .map(|r| r.work_us)
        .collect();
    works.sort_unstable();
    works.dedup();
    let router = criterion_us(decision, "router/seed-agent/pools=1");
    let mut s = String::new();
    for proto in PROTOS {
        if budget_runs(budget, proto, "ceiling", 0).is_empty() {
            continue;
        }
        protocol(&mut s, budget, proto, &works, router);
    }
    s
}

/// The table and the conclusions of one protocol.
fn protocol(
    s: &mut String,
    budget: &LoadResults,
    proto: Proto,
    works: &[u64],
    router: Option<f64>,
) {
    let label = proto.label();
    let _ = writeln!(
        s,
        "| {label}, closed loop | answers/s | ratio to the ceiling | server CPU per answer |\n|---|---|---|---|"
    );
    // A row of the table; returns the server's median ratio to the plain ceiling.
    let row = |s: &mut String, name: String, server: &str, work: u64| {
        let runs = budget_runs(budget, proto, server, work);
        let through: Vec<f64> = runs.iter().map(|r| r.run.throughput).collect();
        let cpu: Vec<f64> = runs.iter().map(|r| r.server_cpu_us_per_request).collect();
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
    for &work in works {
        let name = match work {
            0 => "ceiling".to_string(),
            w => format!("ceiling + {w} µs of CPU"),
        };
        curve.push((work as f64, row(s, name, "ceiling", work)));
    }
    let floor = (!budget_runs(budget, proto, "floor", 0).is_empty()).then(|| {
        row(
            s,
            "floor: the webhook, its decision taken out".into(),
            "floor",
            0,
        )
    });
    let webhook = row(s, "webhook".into(), "webhook", 0);
    let last = works.last().copied().unwrap_or(0);
    let show = |w: Option<f64>| w.map_or(format!("more than {last} µs"), |w| format!("{w:.1} µs"));
    let _ = writeln!(
        s,
        "\n{label}: {RATIO_TARGET} of the ceiling leaves a decision **{}** of CPU time per answer. \
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
