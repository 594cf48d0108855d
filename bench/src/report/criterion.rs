//! criterion's estimates, read from its output directory (`<id>/new/benchmark.json` and
//! `estimates.json`): every benchmark's median and the 95% interval of the median.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::results::Benchmark;

/// The part of criterion's `benchmark.json` the report takes.
#[derive(Deserialize)]
struct BenchmarkFile {
    full_id: String,
    group_id: String,
    #[serde(default)]
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
struct Throughput {
    #[serde(rename = "Bytes", default)]
    bytes: Option<u64>,
}

/// The part of criterion's `estimates.json` the report takes.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
    confidence_interval: Interval,
}

#[derive(Deserialize)]
struct Interval {
    lower_bound: f64,
    upper_bound: f64,
}

/// A file of criterion's, or `None` when it is missing or not of the expected shape (a
/// benchmark criterion did not finish has no estimates).
fn read<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Every criterion benchmark's median and 95% interval, in nanoseconds: the whole path first,
/// then its parts; within a group, by pod and pool count.
pub fn medians(dir: &Path) -> Result<Vec<Benchmark>, Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().is_none_or(|n| n != "new") {
                stack.push(p);
                continue;
            }
            let (Some(b), Some(est)) = (
                read::<BenchmarkFile>(&p.join("benchmark.json")),
                read::<Estimates>(&p.join("estimates.json")),
            ) else {
                continue;
            };
            out.push(Benchmark {
                id: b.full_id,
                group: b.group_id,
                median_ns: est.median.point_estimate,
                low_ns: est.median.confidence_interval.lower_bound,
                high_ns: est.median.confidence_interval.upper_bound,
                bytes: b.throughput.and_then(|t| t.bytes),
            });
        }
    }
    if out.is_empty() {
        return Err(Error::NoEstimates(dir.to_owned()));
    }
    let rank = |b: &Benchmark| {
        let order = ["review", "router", "evaluate", "mutate", "index-build"];
        let pod = ["seed-agent", "12-containers", "300KiB"]
            .iter()
            .position(|p| b.id.contains(p))
            .unwrap_or(9);
        (
            order
                .iter()
                .position(|g| *g == b.group)
                .unwrap_or(order.len()),
            pod,
            b.id.clone(),
        )
    };
    out.sort_by_key(rank);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_are_read_and_ordered_by_group_then_pod() {
        let dir = tempfile::tempdir().unwrap();
        let bench = |path: &str, id: &str, group: &str, median: f64, bytes: &str| {
            let new = dir.path().join(path).join("new");
            std::fs::create_dir_all(&new).unwrap();
            std::fs::write(
                new.join("benchmark.json"),
                format!(r#"{{"full_id":"{id}","group_id":"{group}","throughput":{bytes}}}"#),
            )
            .unwrap();
            std::fs::write(
                new.join("estimates.json"),
                format!(
                    r#"{{"median":{{"point_estimate":{median},"confidence_interval":{{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0}}}}}}"#
                ),
            )
            .unwrap();
        };
        bench("r/a", "router/seed-agent/pools=1", "router", 2.0, "null");
        bench(
            "v/a",
            "review/300KiB/pools=1",
            "review",
            5.0,
            r#"{"Bytes":2048}"#,
        );
        bench(
            "v/b",
            "review/seed-agent/pools=1",
            "review",
            4.0,
            r#"{"Bytes":1024}"#,
        );
        // Unfinished: no estimates.
        std::fs::create_dir_all(dir.path().join("x/new")).unwrap();
        let found = medians(dir.path()).unwrap();
        let ids: Vec<&str> = found.iter().map(|b| b.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "review/seed-agent/pools=1",
                "review/300KiB/pools=1",
                "router/seed-agent/pools=1"
            ]
        );
        assert_eq!(found[0].bytes, Some(1024));
        assert_eq!(found[2].bytes, None);
        assert_eq!((found[0].low_ns, found[0].high_ns), (1.0, 3.0));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(medians(empty.path()), Err(Error::NoEstimates(_))));
    }
}
