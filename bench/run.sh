#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md, then the document's tables and plots rewritten from the
# results (bench/results/*.json, *.svg). Take the figures on a quiet machine: the load
# generator and the servers share its cores.
#
#   bench/run.sh                      all: decision, tls, budget, cluster, then the report
#   bench/run.sh decision tls ...     some parts only (the report always follows)
#   bench/run.sh report               the report alone, from the saved results
#
#   decision  in-process decision time (criterion: cargo bench -p wi-webhook --bench decision)
#   tls       the webhook against its ceiling over TLS on 127.0.0.1 (wi-load tls)
#   budget    the ceiling with 4 to 32 us of CPU time added per answer, next to the webhook
#             and its floor (the webhook with its decision taken out): what a decision may
#             cost for a ratio to the ceiling (wi-load budget)
#   cluster   memory and pod-creation latency with a real control plane (wi-load cluster),
#             started and stopped here, in its own state directory (default /tmp/wi-bench)
#   memory    the memory figures of cluster alone (no pod creates), quicker; printed and
#             saved to target/cluster-memory.json, not taken by the report
#
# QUICK=1 shortens every part, to check that the suite works; its figures are not for the
# document.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [ $# -eq 0 ]; then set -- decision tls budget cluster; fi

step() { printf '\n==> %s\n' "$*" >&2; }

step "building the webhook and the load generator (release)"
cargo build --release -p wi-webhook -p wi-bench
LOAD=$TARGET/release/wi-load

for part in "$@"; do
  case $part in
    decision)
      step "in-process decision time (criterion)"
      # Only this run's estimates go into the report.
      rm -rf "$TARGET/criterion"
      if [ -n "${QUICK:-}" ]; then
        cargo bench -p wi-webhook --bench decision -- --warm-up-time 1 --measurement-time 2
      else
        cargo bench -p wi-webhook --bench decision
      fi
      # Saved now (bench/results/decision.json), with the machine's state of this run.
      "$LOAD" report --criterion "$TARGET/criterion"
      ;;
    tls)
      step "over TLS: the webhook against its ceiling"
      if [ -n "${QUICK:-}" ]; then
        "$LOAD" tls --closed-seconds 2 --open-seconds 3 --warmup-seconds 0.5 --repeats 1
      else
        "$LOAD" tls
      fi
      ;;
    budget)
      step "what a decision may cost: the ceiling with CPU time added, next to the webhook"
      if [ -n "${QUICK:-}" ]; then
        "$LOAD" budget --closed-seconds 2 --warmup-seconds 0.5 --repeats 1
      else
        "$LOAD" budget
      fi
      ;;
    cluster | memory)
      step "memory and pod-creation latency through a real control plane"
      export WI_CLUSTER_DIR=${WI_BENCH_CLUSTER_DIR:-/tmp/wi-bench}
      # No test webhook: this part starts and registers the release build itself.
      export WI_SKIP_WEBHOOK=1
      trap 'step "stopping the control plane"; tests/cluster/run.sh down' EXIT
      # run.sh builds and uses target/debug/wi-webhook (for certificates) whatever
      # CARGO_TARGET_DIR says.
      env -u CARGO_TARGET_DIR tests/cluster/run.sh up >/dev/null
      args=(--state "$WI_CLUSTER_DIR" --webhook-bin "$TARGET/release/wi-webhook")
      if [ "$part" = memory ]; then
        args+=(--memory-only --out "$TARGET/cluster-memory.json")
      fi
      if [ -n "${QUICK:-}" ]; then
        args+=(--service-accounts 2000 --pools 200 --pods 100 --load-seconds 3)
      fi
      "$LOAD" cluster "${args[@]}"
      tests/cluster/run.sh down
      trap - EXIT
      ;;
    report) ;;
    *)
      echo "unknown part: $part (decision, tls, budget, cluster, memory or report)" >&2
      exit 2
      ;;
  esac
done

step "rewriting BENCHMARKS.md"
"$LOAD" report
