#!/usr/bin/env bash
# The one command that runs every test of the project:
#   formatting, clippy, unit and golden tests, then the end-to-end tests against a real
#   control plane (tests/cluster/run.sh), which is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The end-to-end tests always run against the webhook (the skip is for developing run.sh).
unset WI_SKIP_WEBHOOK

step() { printf '\n==> %s\n' "$*" >&2; }

# Every cargo test summary line goes here too, for the one total printed at the end.
results=$(mktemp)
tested() { "$@" 2>&1 | tee -a "$results"; }

# On exit, failure included: stop the control plane (if it was started), then one closing
# line for the whole run (cargo's own last summary is a doc-test one with 0 tests).
finish() {
  step "stopping the control plane"
  tests/cluster/run.sh down
  awk '/^test result:/ { p += $4; f += $6; i += $8 }
       END { printf "total: %d passed, %d failed, %d skipped\n", p, f, i }' "$results"
  rm -f "$results"
}
trap finish EXIT

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "dependency policy: cargo deny check licenses bans sources"
# deny.toml says which licenses, crates and sources are allowed. Only these three checks:
# the advisories check downloads the RustSec database from GitHub, which the test
# environment cannot reach (run `cargo deny check advisories` where it can).
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
cargo deny check licenses bans sources

step "unit and golden tests"
tested cargo test --workspace --exclude wi-e2e

# Compile the end-to-end tests before starting the cluster, so it does not idle meanwhile.
step "building the end-to-end tests"
cargo test -p wi-e2e --no-run

step "starting the control plane and the webhook"
tests/cluster/run.sh up >/dev/null

step "end-to-end tests"
tested cargo test -p wi-e2e -- --test-threads=2

