#!/usr/bin/env bash
# The soak (docs/reliability.md): a private control plane and webhook in $WI_CLUSTER_DIR
# (default /tmp/wi-soak), then WI_SOAK_SECONDS (default 600) at WI_SOAK_RATE admissions per
# second (default 100) with zero failures and flat memory. Not part of tests/test.sh.
#
#   tests/soak.sh                         # 10 minutes at 100/s
#   WI_SOAK_SECONDS=60 tests/soak.sh      # a quick check
#
# The control plane is stopped on exit; the figures are the `SOAK RESULT` line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export WI_CLUSTER_DIR=${WI_CLUSTER_DIR:-/tmp/wi-soak}
unset WI_SKIP_WEBHOOK
cargo test -p wi-e2e --test soak --no-run
trap 'tests/cluster/run.sh down' EXIT
tests/cluster/run.sh up >/dev/null
cargo test -p wi-e2e --test soak -- --ignored --nocapture
