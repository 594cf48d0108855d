//! Which runs make a figure: repeats of a scenario, their median, the webhook paired with
//! the ceiling run next to it, and where a curve of ratios crosses a target.

use crate::load::Proto;
use crate::results::{Benchmark, LoadResults, ServerRun};

/// Every repeat of one scenario on one server (results without repeats: the one run).
pub fn repeats<'a>(
    results: &'a LoadResults,
    server: &str,
    proto: Proto,
    rate: u64,
) -> Vec<&'a ServerRun> {
    results
        .runs
        .iter()
        .filter(|r| r.server == server && r.run.proto == proto && r.run.rate == rate)
        .collect()
}

/// The item with the median `key`; with an even number, the lower of the two middle ones.
pub fn median_by<T>(mut items: Vec<T>, key: impl Fn(&T) -> f64) -> Option<T> {
    items.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let middle = items.len().checked_sub(1)? / 2;
    items.into_iter().nth(middle)
}

pub fn median(values: &[f64]) -> f64 {
    median_by(values.to_vec(), |v| *v).unwrap_or(f64::NAN)
}

/// The median repeat of a scenario: by throughput in the closed loop (rate 0), by p99 at a
/// fixed rate.
pub fn find_run<'a>(
    results: &'a LoadResults,
    server: &str,
    proto: Proto,
    rate: u64,
) -> Option<&'a ServerRun> {
    median_by(repeats(results, server, proto, rate), |r| {
        if rate == 0 {
            r.run.throughput
        } else {
            r.run.latency.p99_us
        }
    })
}

/// Every repeat's p99 of a scenario.
pub fn p99s(results: &LoadResults, server: &str, proto: Proto, rate: u64) -> Vec<f64> {
    repeats(results, server, proto, rate)
        .iter()
        .map(|r| r.run.latency.p99_us)
        .collect()
}

/// A run, the base run of the same repeat, and the run's throughput over the base's.
pub type Pair<'a> = (&'a ServerRun, &'a ServerRun, f64);

/// Each of `runs` with the run of `base` of the same repeat, and its throughput over that
/// one's; runs without such a base are left out.
pub fn by_repeat<'a>(runs: Vec<&'a ServerRun>, base: &[&'a ServerRun]) -> Vec<Pair<'a>> {
    runs.into_iter()
        .filter_map(|r| {
            let b = base.iter().find(|b| b.repeat == r.repeat)?;
            Some((r, *b, r.run.throughput / b.run.throughput))
        })
        .collect()
}

/// The closed-loop figure of a protocol: the webhook and the ceiling paired by repeat (each
/// pair ran back to back), the pair with the median ratio, and every ratio in the order of
/// the repeats.
pub fn closed_loop(results: &LoadResults, proto: Proto) -> Option<(Pair<'_>, Vec<f64>)> {
    let all = by_repeat(
        repeats(results, "webhook", proto, 0),
        &repeats(results, "ceiling", proto, 0),
    );
    let ratios = all.iter().map(|p| p.2).collect();
    Some((median_by(all, |p| p.2)?, ratios))
}

/// The work a decision may cost for `ratio`, on a curve of (µs of work, ratio to the plain
/// ceiling) sorted by work: interpolated between the two points around it; `None` when the
/// curve does not come down to `ratio`.
pub fn work_at(curve: &[(f64, f64)], ratio: f64) -> Option<f64> {
    curve.windows(2).find_map(|w| {
        let ((w0, r0), (w1, r1)) = (w[0], w[1]);
        (r0 >= ratio && ratio >= r1 && r0 > r1).then(|| w0 + (r0 - ratio) / (r0 - r1) * (w1 - w0))
    })
}

/// One server of `wi-load budget` in one protocol, with `work` µs added: its runs by repeat.
pub fn budget_runs<'a>(
    budget: &'a LoadResults,
    proto: Proto,
    server: &str,
    work: u64,
) -> Vec<&'a ServerRun> {
    repeats(budget, server, proto, 0)
        .into_iter()
        .filter(|r| r.work_us == work)
        .collect()
}

/// A server's throughput over the plain ceiling's in the same repeat, for every repeat.
pub fn budget_ratios(budget: &LoadResults, proto: Proto, server: &str, work: u64) -> Vec<f64> {
    by_repeat(
        budget_runs(budget, proto, server, work),
        &budget_runs(budget, proto, "ceiling", 0),
    )
    .into_iter()
    .map(|p| p.2)
    .collect()
}

/// A criterion benchmark's median, in µs.
pub fn criterion_us(decision: Option<&[Benchmark]>, id: &str) -> Option<f64> {
    decision?
        .iter()
        .find(|b| b.id == id)
        .map(|b| b.median_ns / 1e3)
}
