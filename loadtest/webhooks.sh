#!/usr/bin/env bash
# Webhook delivery latency through the release binary (docs/webhooks.md,
# docs/performance.md): a change's request sent -> its event at a receiver
# on the same machine, with --fsync always; once with nothing else running,
# once with 4 connections adding consumption meanwhile.
#
#   bash loadtest/webhooks.sh              # 2,000 events each way
#   EVENTS=500 bash loadtest/webhooks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS="${EVENTS:-2000}"
cargo build --release --quiet
cargo build --release --quiet --example webhook_latency
for load in 0 4; do
  target/release/examples/webhook_latency --tally target/release/tally --events "$EVENTS" --load "$load"
done
