#!/usr/bin/env bash
# The one command that runs every test of the project:
#   formatting, clippy, unit and golden tests, then the end-to-end tests against a real
#   control plane (tests/cluster/run.sh), which is stopped on exit, failure included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The end-to-end tests always run against the webhook (the skip is for developing run.sh).
unset WI_SKIP_WEBHOOK

step() { printf '\n==> %s\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "unit and golden tests"
cargo test --workspace --exclude wi-e2e

# Compile the end-to-end tests before starting the cluster, so it does not idle meanwhile.
step "building the end-to-end tests"
cargo test -p wi-e2e --no-run

trap 'step "stopping the control plane"; tests/cluster/run.sh down' EXIT
step "starting the control plane and the webhook"
tests/cluster/run.sh up >/dev/null

step "end-to-end tests"
cargo test -p wi-e2e -- --test-threads=2
