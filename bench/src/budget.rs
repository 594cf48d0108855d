//! `wi-load budget`: how much CPU time a decision may cost. The ceiling of `wi-load tls`
//! burns N µs of CPU time per answer before its canned one, for every N asked, and is
//! measured in the closed loop next to the plain ceiling and the webhook. The report tabulates
//! the ratio to the plain ceiling against N: where it crosses the target is the budget of a
//! decision on this machine, and where the webhook's ratio falls on it is what the webhook's
//! answer costs in effect, the stack's extra work included. The floor (the webhook with its
//! decision taken out, `floor`) is measured alongside: what the webhook costs before it
//! decides anything, and so what is left to a decision.

use std::path::PathBuf;

use crate::procfs;
use crate::server::Kind;
use crate::tlsbench::{Bench, LoadArgs, Mode, Spec};

#[derive(clap::Args, Debug, Clone)]
pub struct BudgetArgs {
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/budget.json")]
    pub out: PathBuf,
    /// CPU time the ceiling burns per answer, µs; one ceiling per value, besides the plain
    /// one.
    #[arg(long, value_delimiter = ',', default_value = "4,8,12,16,24,32")]
    pub work_us: Vec<u64>,
    #[command(flatten)]
    pub load: LoadArgs,
}

pub async fn run(args: BudgetArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let mut specs = vec![Spec::WEBHOOK, Spec::FLOOR, Spec::CEILING];
    specs.extend(
        args.work_us
            .iter()
            .filter(|&&w| w > 0)
            .map(|&work_us| Spec {
                kind: Kind::Ceiling,
                work_us,
            }),
    );
    let bench = Bench::start(&specs, &args.load).await?;
    let rows = bench.measure(&args.load, &[Mode::Closed]).await?;
    bench.write(&args.out, machine, &args.load, rows)
}
