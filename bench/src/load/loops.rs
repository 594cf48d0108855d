//! The two ways of driving a server: closed loop (each request sent as soon as the previous
//! answer arrived) and open loop (requests due at a fixed rate, paced by a thread of their
//! own), each recording every answer's latency and the first error.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::{
    Conn, Error, MAX_IN_FLIGHT, MAX_REQUESTS, Proto, RECONNECTS, REQUEST_TIMEOUT, Target, chain,
    send,
};
use crate::results::{Loop, Run};
use crate::stats::Summary;

struct Recorder {
    latencies: Mutex<Vec<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Recorder {
    fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Recorder {
            latencies: Mutex::new(Vec::with_capacity(capacity)),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        })
    }

    fn record(&self, result: Result<Bytes, Error>, latency: Duration) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.latencies
                    .lock()
                    .expect("recorder")
                    .push(latency.as_nanos() as u64);
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().expect("recorder");
                if first.is_none() {
                    *first = Some(chain(&e));
                }
            }
        }
    }
}

async fn timed(conn: &Conn, target: &Target, proto: Proto) -> Result<Bytes, Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT, send(conn, target, proto)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout(REQUEST_TIMEOUT)),
    }
}

/// Closed loop: `concurrency` requests outstanding on each connection, each sent as soon as
/// the previous answer arrived, for `duration` (and at most [`MAX_REQUESTS`]).
pub async fn closed_loop(
    target: &Target,
    proto: Proto,
    conns: &[Conn],
    concurrency: usize,
    duration: Duration,
) -> Run {
    let concurrency = if proto == Proto::H1 { 1 } else { concurrency };
    let reconnects = RECONNECTS.load(Ordering::Relaxed);
    let recorder = Recorder::new(1 << 16);
    let issued = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut workers = Vec::new();
    for conn in conns {
        for _ in 0..concurrency {
            let (conn, target, recorder, issued) = (
                conn.clone(),
                target.clone(),
                recorder.clone(),
                issued.clone(),
            );
            workers.push(tokio::spawn(async move {
                while Instant::now() < deadline
                    && issued.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    let t0 = Instant::now();
                    let result = timed(&conn, &target, proto).await;
                    recorder.record(result, t0.elapsed());
                }
            }));
        }
    }
    for w in workers {
        let _ = w.await;
    }
    finish(
        proto,
        Loop::Closed,
        0,
        conns.len(),
        concurrency,
        started.elapsed(),
        &recorder,
        0,
        reconnects,
    )
}

/// Open loop at `rate` requests per second for `duration`: request `i` is due at
/// `start + i / rate`, whatever happened to the ones before it. HTTP/1.1 requests take any
/// idle connection of `conns` (waiting for one counts as latency); HTTP/2 requests are spread
/// over the connections, multiplexed.
pub async fn open_loop(
    target: &Target,
    proto: Proto,
    conns: &[Conn],
    rate: u64,
    duration: Duration,
) -> Run {
    let total = (rate as f64 * duration.as_secs_f64()).round() as u64;
    let reconnects = RECONNECTS.load(Ordering::Relaxed);
    let recorder = Recorder::new(total as usize);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let idle: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(conns.to_vec()));
    let permits = Arc::new(Semaphore::new(conns.len()));
    let handle = tokio::runtime::Handle::current();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now() + Duration::from_millis(5);
    let pacer = {
        let (target, recorder, in_flight, idle, permits, conns) = (
            target.clone(),
            recorder.clone(),
            in_flight.clone(),
            idle.clone(),
            permits.clone(),
            conns.to_vec(),
        );
        std::thread::spawn(move || {
            // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack.
            unsafe {
                libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64);
            }
            let mut dropped = 0u64;
            for i in 0..total {
                let due = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                    dropped += 1;
                    continue;
                }
                in_flight.fetch_add(1, Ordering::Relaxed);
                let (target, recorder, in_flight, idle, permits) = (
                    target.clone(),
                    recorder.clone(),
                    in_flight.clone(),
                    idle.clone(),
                    permits.clone(),
                );
                let h2 = (proto == Proto::H2).then(|| conns[i as usize % conns.len()].clone());
                handle.spawn(async move {
                    let result = match h2 {
                        Some(conn) => timed(&conn, &target, proto).await,
                        None => {
                            let _permit = permits.acquire().await.expect("never closed");
                            let conn = idle.lock().expect("pool").pop().expect("a permit");
                            let r = timed(&conn, &target, proto).await;
                            idle.lock().expect("pool").push(conn);
                            r
                        }
                    };
                    recorder.record(result, due.elapsed());
                    in_flight.fetch_sub(1, Ordering::Relaxed);
                });
            }
            dropped
        })
    };
    let dropped = tokio::task::spawn_blocking(move || pacer.join().expect("the pacer"))
        .await
        .expect("the pacer");
    // Let the last answers arrive (each request has its own timeout).
    let drain_until = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    finish(
        proto,
        Loop::Open,
        rate,
        conns.len(),
        1,
        elapsed,
        &recorder,
        dropped,
        reconnects,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    proto: Proto,
    mode: Loop,
    rate: u64,
    connections: usize,
    concurrency: usize,
    elapsed: Duration,
    recorder: &Recorder,
    dropped: u64,
    reconnects_before: u64,
) -> Run {
    let mut latencies = std::mem::take(&mut *recorder.latencies.lock().expect("recorder"));
    let ok = recorder.ok.load(Ordering::Relaxed);
    Run {
        proto,
        mode,
        rate,
        connections,
        concurrency,
        seconds: elapsed.as_secs_f64(),
        ok,
        errors: recorder.errors.load(Ordering::Relaxed),
        dropped,
        throughput: ok as f64 / elapsed.as_secs_f64(),
        latency: Summary::of(&mut latencies),
        first_error: recorder.first_error.lock().expect("recorder").clone(),
        reconnects: RECONNECTS.load(Ordering::Relaxed) - reconnects_before,
    }
}
