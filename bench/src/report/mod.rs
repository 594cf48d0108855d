//! `wi-load report`: BENCHMARKS.md's generated parts and plots, from the results of the
//! other commands (and criterion's estimates). Only the text between
//! `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->` is replaced; the rest
//! of the document is prose kept by hand.

mod budget;
mod cluster;
mod criterion;
mod format;
mod select;
mod svg;
mod tables;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::results::{Benchmark, ClusterResults, DecisionResults, LoadResults};

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

/// What stops the report. The messages name the file; the cause follows as the source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A results file that is there but not of the shape the measuring commands write.
    #[error("{}: not a results file of wi-load", path.display())]
    Results {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("no criterion estimates under {}", .0.display())]
    NoEstimates(PathBuf),
    #[error("no {0} in the document")]
    NoMarker(String),
}

/// A results file; `None` when there is none (not measured yet).
fn read<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Results {
            path: path.to_owned(),
            source,
        })
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Write {
        path: path.to_owned(),
        source,
    })
}

fn replace_block(doc: &str, name: &str, body: &str) -> Result<String, Error> {
    let begin = format!("<!-- BEGIN GENERATED: {name} -->");
    let end = format!("<!-- END GENERATED: {name} -->");
    let start = doc
        .find(&begin)
        .ok_or_else(|| Error::NoMarker(begin.clone()))?;
    let stop = doc[start..]
        .find(&end)
        .map(|i| start + i)
        .ok_or_else(|| Error::NoMarker(end.clone()))?;
    Ok(format!(
        "{}{begin}\n{}\n{}",
        &doc[..start],
        body.trim_end(),
        &doc[stop..]
    ))
}

/// criterion's medians of this run, saved to `path` with the machine; or the saved ones.
fn decision(criterion_dir: Option<&Path>, path: &Path) -> Result<Option<DecisionResults>, Error> {
    let Some(dir) = criterion_dir else {
        return read(path);
    };
    let saved = DecisionResults {
        machine: Some(crate::procfs::machine()),
        benchmarks: criterion::medians(dir)?,
    };
    let text = serde_json::to_vec_pretty(&saved).map_err(|source| Error::Results {
        path: path.to_owned(),
        source,
    })?;
    write(path, text)?;
    Ok(Some(saved))
}

/// The saved results, each `None` when not measured yet.
struct Results {
    decision: Option<DecisionResults>,
    tls: Option<LoadResults>,
    budget: Option<LoadResults>,
    cluster: Option<ClusterResults>,
}

impl Results {
    fn read(dir: &Path, criterion_dir: Option<&Path>) -> Result<Results, Error> {
        Ok(Results {
            decision: decision(criterion_dir, &dir.join("decision.json"))?,
            tls: read(&dir.join("tls.json"))?,
            cluster: read(&dir.join("cluster.json"))?,
            budget: read(&dir.join("budget.json"))?,
        })
    }
}

/// The document with its generated blocks rewritten, and the plots.
struct Rendered {
    doc: String,
    tls_plot: Option<String>,
    cluster_plot: Option<String>,
}

fn render(doc: &str, results: &Results) -> Result<Rendered, Error> {
    let benchmarks: Option<&[Benchmark]> = results.decision.as_ref().map(|d| &d.benchmarks[..]);
    let (tls, budget, cluster) = (
        results.tls.as_ref(),
        results.budget.as_ref(),
        results.cluster.as_ref(),
    );
    let machines = [
        (
            "decision (criterion)",
            results.decision.as_ref().and_then(|d| d.machine.as_ref()),
        ),
        ("TLS", tls.and_then(|r| r.machine.as_ref())),
        ("budget", budget.and_then(|r| r.machine.as_ref())),
        ("control plane", cluster.and_then(|r| r.machine.as_ref())),
    ];
    let blocks = [
        ("machine", tables::machine_block(&machines)),
        ("targets", tables::targets_block(benchmarks, tls, cluster)),
        ("decision", tables::decision_block(benchmarks)),
        ("tls", tables::tls_block(tls)),
        ("budget", budget::budget_block(budget, benchmarks)),
        ("memory", cluster::memory_block(cluster)),
        ("cluster", cluster::cluster_block(cluster)),
    ];
    let mut doc = doc.to_owned();
    for (name, body) in blocks {
        doc = replace_block(&doc, name, &body)?;
    }
    Ok(Rendered {
        doc,
        tls_plot: svg::tls_plot(tls),
        cluster_plot: svg::cluster_plot(cluster),
    })
}

pub fn run(args: ReportArgs) -> Result<(), Error> {
    std::fs::create_dir_all(&args.results).map_err(|source| Error::Write {
        path: args.results.clone(),
        source,
    })?;
    let results = Results::read(&args.results, args.criterion.as_deref())?;
    let doc = std::fs::read_to_string(&args.doc).map_err(|source| Error::Read {
        path: args.doc.clone(),
        source,
    })?;
    let rendered = render(&doc, &results)?;
    write(&args.doc, rendered.doc)?;
    if let Some(svg) = rendered.tls_plot {
        write(&args.results.join("tls-latency.svg"), svg)?;
    }
    if let Some(svg) = rendered.cluster_plot {
        write(&args.results.join("pod-create-latency.svg"), svg)?;
    }
    eprintln!(
        "rewrote {} and the plots in {}",
        args.doc.display(),
        args.results.display()
    );
    Ok(())
}
