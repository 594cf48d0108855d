//! `wi-load tls`: the webhook and its ceiling over TLS on loopback, each in its own process,
//! measured one after the other on every scenario (so drift of a shared machine hits both).
//! [`Bench`] (start the servers, measure them in turn, write the results) is shared with
//! `wi-load budget`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::load::{self, Conn, Proto, Target};
use crate::procfs;
use crate::results::{LoadResults, ServerRun};
use crate::server::{Kind, PodKind, ServerProcess};
use anyhow::Context;
use bytes::Bytes;

#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/tls.json")]
    pub out: PathBuf,
    /// Open-loop rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    pub rates: Vec<u64>,
    /// Length of each open-loop run.
    #[arg(long, default_value_t = 10.0)]
    pub open_seconds: f64,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// How the servers are loaded, shared by `wi-load tls` and `wi-load budget`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// The pod the AdmissionReviews carry.
    #[arg(long, value_enum, default_value = "seed")]
    pub pod: PodKind,
    /// Length of each closed-loop (maximum throughput) run.
    #[arg(long, default_value_t = 5.0)]
    pub closed_seconds: f64,
    /// Unmeasured load before each run.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_seconds: f64,
    /// HTTP/1.1 keep-alive connections (one request at a time each).
    #[arg(long, default_value_t = 16)]
    pub h1_connections: usize,
    /// HTTP/2: one connection, as the API server keeps per webhook, with this many streams
    /// outstanding in the closed loop.
    #[arg(long, default_value_t = 32)]
    pub h2_streams: usize,
    /// Protocols to measure.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "h1,h2")]
    pub protos: Vec<Proto>,
    /// Every scenario this many times, the servers in turn each time (the order reversed
    /// every other time): the report takes the median, and shows every repeat, so one
    /// stall of the machine does not make the figure.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

/// One server to measure: what it answers with, and the CPU time its ceiling adds.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub kind: Kind,
    pub work_us: u64,
}

impl Spec {
    pub const WEBHOOK: Spec = Spec {
        kind: Kind::Webhook,
        work_us: 0,
    };
    pub const CEILING: Spec = Spec {
        kind: Kind::Ceiling,
        work_us: 0,
    };
    pub const FLOOR: Spec = Spec {
        kind: Kind::Floor,
        work_us: 0,
    };
}

/// How a run loads a server.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Requests back to back, for `closed_seconds`: the maximum throughput.
    Closed,
    /// Requests due at a fixed rate (per second), for `seconds`.
    Open { rate: u64, seconds: f64 },
}

struct Server {
    spec: Spec,
    process: ServerProcess,
    targets: Vec<(Proto, Target)>,
}

/// The servers of one comparison, started, with the request they are loaded with; their
/// certificates live in `dir` until dropped.
pub struct Bench {
    servers: Vec<Server>,
    dir: PathBuf,
    body: Bytes,
    answer: Bytes,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.servers.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn connections(load: &LoadArgs, proto: Proto) -> usize {
    match proto {
        Proto::H1 => load.h1_connections,
        Proto::H2 => 1,
    }
}

impl Bench {
    /// Starts every server of `specs`, each in its own process, and checks that each answers
    /// the webhook's bytes.
    pub async fn start(specs: &[Spec], load: &LoadArgs) -> anyhow::Result<Bench> {
        let dir = std::env::temp_dir().join(format!("wi-load-{}", std::process::id()));
        let ca = crate::server::certificates(&dir)?;
        let body = Bytes::from(crate::server::body(load.pod));
        let answer = crate::server::canned_answer(&body).await?;
        eprintln!(
            "request {} bytes, answer {} bytes; starting {} servers",
            body.len(),
            answer.len(),
            specs.len()
        );
        let mut bench = Bench {
            servers: Vec::new(),
            dir,
            body,
            answer,
        };
        for &spec in specs {
            let process = ServerProcess::start(spec.kind, load.pod, &bench.dir, spec.work_us)?;
            let mut targets = Vec::new();
            for &proto in &load.protos {
                let target = Target {
                    addr: process.addr,
                    tls: std::sync::Arc::new(load::client_config(&ca, proto)?),
                    path: "/mutate".into(),
                    body: bench.body.clone(),
                };
                // Every server answers the same bytes.
                let conns = load::open(&target, proto, 1).await?;
                let got = load::send(&conns[0], &target, proto).await?;
                anyhow::ensure!(
                    got.len() == bench.answer.len(),
                    "{} answered {} bytes, expected {}",
                    spec.kind.name(),
                    got.len(),
                    bench.answer.len()
                );
                targets.push((proto, target));
            }
            bench.servers.push(Server {
                spec,
                process,
                targets,
            });
        }
        Ok(bench)
    }

    /// Every mode of every protocol, `repeats` times, the servers in turn (their order
    /// reversed every other time).
    pub async fn measure(&self, load: &LoadArgs, modes: &[Mode]) -> anyhow::Result<Vec<ServerRun>> {
        let servers = &self.servers;
        let mut rows = Vec::new();
        let repeats = load.repeats.max(1);
        let warmup = Duration::from_secs_f64(load.warmup_seconds);
        for (pi, &proto) in load.protos.iter().enumerate() {
            // Each server's opened just before its first run in this protocol: the server
            // closes a connection that has carried no request for 10 s (`api::tls`), and one
            // that has for `serve --idle-timeout-seconds`, so connections opened earlier would
            // have timed out through the other servers' or the other protocol's runs.
            let mut conns: Vec<Option<Vec<Conn>>> = servers.iter().map(|_| None).collect();
            for &mode in modes {
                for (repeat, si) in (0..repeats).flat_map(|repeat| {
                    let mut order: Vec<usize> = (0..servers.len()).collect();
                    if repeat % 2 == 1 {
                        order.reverse();
                    }
                    order.into_iter().map(move |si| (repeat, si))
                }) {
                    let server = &servers[si];
                    let (_, target) = &server.targets[pi];
                    let conns = match &mut conns[si] {
                        Some(conns) => conns,
                        empty => {
                            empty.insert(load::open(target, proto, connections(load, proto)).await?)
                        }
                    };
                    if !warmup.is_zero() {
                        load::closed_loop(target, proto, conns, load.h2_streams, warmup).await;
                    }
                    let pid = server.process.pid();
                    let (s0, c0) = (
                        procfs::cpu_nanos(pid),
                        procfs::cpu_nanos(std::process::id()),
                    );
                    let t0 = Instant::now();
                    let run = match mode {
                        Mode::Closed => {
                            let d = Duration::from_secs_f64(load.closed_seconds);
                            load::closed_loop(target, proto, conns, load.h2_streams, d).await
                        }
                        Mode::Open { rate, seconds } => {
                            let d = Duration::from_secs_f64(seconds);
                            load::open_loop(target, proto, conns, rate, d).await
                        }
                    };
                    let (s1, c1) = (
                        procfs::cpu_nanos(pid),
                        procfs::cpu_nanos(std::process::id()),
                    );
                    let per = |d: u64| d as f64 / 1e3 / run.ok.max(1) as f64;
                    let row = ServerRun {
                        server: server.spec.kind.name().to_owned(),
                        work_us: server.spec.work_us,
                        repeat,
                        server_cpu_us_per_request: per(s1.saturating_sub(s0)),
                        client_cpu_us_per_request: per(c1.saturating_sub(c0)),
                        server_memory: procfs::memory(pid),
                        run,
                    };
                    let name = match row.work_us {
                        0 => row.server.to_string(),
                        w => format!("{}+{w}us", row.server),
                    };
                    eprintln!(
                        "{:12} {:8} {:>6} #{} {:>9.0}/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  errors {} dropped {} reconnects {}  ({:.1} s)",
                        name,
                        proto.label(),
                        match mode {
                            Mode::Closed => "closed".to_string(),
                            Mode::Open { rate, .. } => format!("{rate}/s"),
                        },
                        repeat + 1,
                        row.run.throughput,
                        row.run.latency.p50_us,
                        row.run.latency.p99_us,
                        row.run.latency.p999_us,
                        row.run.errors,
                        row.run.dropped,
                        row.run.reconnects,
                        t0.elapsed().as_secs_f64()
                    );
                    if let Some(e) = &row.run.first_error {
                        eprintln!("  first error: {e}");
                    }
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }

    /// The results file: the machine, the load and every row.
    pub fn write(
        &self,
        out: &Path,
        machine: procfs::Machine,
        load: &LoadArgs,
        rows: Vec<ServerRun>,
    ) -> anyhow::Result<()> {
        let result = LoadResults {
            machine: Some(machine),
            pod: format!("{:?}", load.pod).to_lowercase(),
            request_bytes: self.body.len(),
            response_bytes: self.answer.len(),
            h1_connections: load.h1_connections,
            h2_streams: load.h2_streams,
            repeats: load.repeats.max(1),
            runs: rows,
        };
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, serde_json::to_vec_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
        Ok(())
    }
}

pub async fn run(args: TlsArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let bench = Bench::start(&[Spec::WEBHOOK, Spec::CEILING], &args.load).await?;
    let mut modes = vec![Mode::Closed];
    modes.extend(args.rates.iter().map(|&rate| Mode::Open {
        rate,
        seconds: args.open_seconds,
    }));
    let rows = bench.measure(&args.load, &modes).await?;
    bench.write(&args.out, machine, &args.load, rows)
}
