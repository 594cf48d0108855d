//! `wi-load tls`: the webhook and its ceiling over TLS on loopback, each in its own process,
//! measured one after the other on every scenario (so drift of a shared machine hits both).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::load::{self, Conn, Proto, Run, Target};
use crate::procfs;
use crate::server::{Kind, PodKind, ServerProcess};

#[derive(clap::Args, Debug, Clone)]
pub struct TlsArgs {
    /// Where to write the results.
    #[arg(long, default_value = "bench/results/tls.json")]
    pub out: PathBuf,
    /// The pod the AdmissionReviews carry.
    #[arg(long, value_enum, default_value = "seed")]
    pub pod: PodKind,
    /// Open-loop rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    pub rates: Vec<u64>,
    /// Length of each closed-loop (maximum throughput) run.
    #[arg(long, default_value_t = 5.0)]
    pub closed_seconds: f64,
    /// Length of each open-loop run.
    #[arg(long, default_value_t = 10.0)]
    pub open_seconds: f64,
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
    /// Every scenario this many times, the two servers in turn each time (the order swapped
    /// every other time): the report takes the median, and shows every repeat, so one
    /// stall of the machine does not make the figure.
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}

#[derive(Serialize)]
struct Row {
    server: &'static str,
    /// Which repeat of the scenario (0-based).
    repeat: usize,
    #[serde(flatten)]
    run: Run,
    /// CPU time of the server process per answered request.
    server_cpu_us_per_request: f64,
    /// CPU time of the load generator per answered request.
    client_cpu_us_per_request: f64,
    server_memory: procfs::Memory,
}

struct Server {
    process: ServerProcess,
    targets: Vec<(Proto, Target)>,
}

fn connections(args: &TlsArgs, proto: Proto) -> usize {
    match proto {
        Proto::H1 => args.h1_connections,
        Proto::H2 => 1,
    }
}

pub async fn run(args: TlsArgs) -> anyhow::Result<()> {
    let machine = procfs::machine();
    let dir = std::env::temp_dir().join(format!("wi-load-{}", std::process::id()));
    let ca = crate::server::certificates(&dir)?;
    let body = Bytes::from(crate::server::body(args.pod));
    let answer = crate::server::canned_answer(&body).await?;
    eprintln!(
        "request {} bytes, answer {} bytes; starting the webhook and the ceiling",
        body.len(),
        answer.len()
    );

    let mut servers = Vec::new();
    for kind in [Kind::Webhook, Kind::Ceiling] {
        let process = ServerProcess::start(kind, args.pod, &dir)?;
        let mut targets = Vec::new();
        for &proto in &args.protos {
            let target = Target {
                addr: process.addr,
                tls: std::sync::Arc::new(load::client_config(&ca, proto)?),
                path: "/mutate".into(),
                body: body.clone(),
            };
            // Both servers answer the same bytes.
            let conns = load::open(&target, proto, 1).await?;
            let got = load::send(&conns[0], &target, proto).await?;
            anyhow::ensure!(
                got.len() == answer.len(),
                "{} answered {} bytes, expected {}",
                kind.name(),
                got.len(),
                answer.len()
            );
            targets.push((proto, target));
        }
        servers.push(Server { process, targets });
    }

    let mut rows = Vec::new();
    let repeats = args.repeats.max(1);
    let warmup = Duration::from_secs_f64(args.warmup_seconds);
    for (pi, &proto) in args.protos.iter().enumerate() {
        // Opened for this protocol's runs only: a connection left idle through the other
        // protocol's runs would meet the server's idle timeout (`serve --idle-timeout-seconds`).
        let mut conns: Vec<Vec<Conn>> = Vec::new();
        for server in &servers {
            let n = connections(&args, proto);
            conns.push(load::open(&server.targets[pi].1, proto, n).await?);
        }
        let mut modes: Vec<Option<u64>> = vec![None];
        modes.extend(args.rates.iter().map(|&r| Some(r)));
        for mode in modes {
            for (repeat, si) in (0..repeats).flat_map(|repeat| {
                let mut order: Vec<usize> = (0..servers.len()).collect();
                if repeat % 2 == 1 {
                    order.reverse();
                }
                order.into_iter().map(move |si| (repeat, si))
            }) {
                let (server, conns) = (&servers[si], &conns[si]);
                let (_, target) = &server.targets[pi];
                if !warmup.is_zero() {
                    load::closed_loop(target, proto, conns, args.h2_streams, warmup).await;
                }
                let pid = server.process.pid();
                let (s0, c0) = (
                    procfs::cpu_nanos(pid),
                    procfs::cpu_nanos(std::process::id()),
                );
                let t0 = Instant::now();
                let run = match mode {
                    None => {
                        let d = Duration::from_secs_f64(args.closed_seconds);
                        load::closed_loop(target, proto, conns, args.h2_streams, d).await
                    }
                    Some(rate) => {
                        let d = Duration::from_secs_f64(args.open_seconds);
                        load::open_loop(target, proto, conns, rate, d).await
                    }
                };
                let (s1, c1) = (
                    procfs::cpu_nanos(pid),
                    procfs::cpu_nanos(std::process::id()),
                );
                let per = |d: u64| d as f64 / 1e3 / run.ok.max(1) as f64;
                let row = Row {
                    server: server.process.kind.name(),
                    repeat,
                    server_cpu_us_per_request: per(s1.saturating_sub(s0)),
                    client_cpu_us_per_request: per(c1.saturating_sub(c0)),
                    server_memory: procfs::memory(pid),
                    run,
                };
                eprintln!(
                    "{:8} {:8} {:>6} #{} {:>9.0}/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  errors {} dropped {} reconnects {}  ({:.1} s)",
                    row.server,
                    proto.label(),
                    mode.map_or("closed".into(), |r| format!("{r}/s")),
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
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);

    let result = json!({
        "machine": machine,
        "pod": format!("{:?}", args.pod).to_lowercase(),
        "request_bytes": body.len(),
        "response_bytes": answer.len(),
        "h1_connections": args.h1_connections,
        "h2_streams": args.h2_streams,
        "repeats": repeats,
        "runs": rows,
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_vec_pretty(&result)?)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
