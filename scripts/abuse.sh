#!/usr/bin/env bash
# The abuse suite (tests/abuse.rs) in its long version against the release
# binary: each attack runs ABUSE_SECS seconds (30 by default) while a
# well-behaved client checks a feature; prints its p99 before and during each
# attack, the fifth client's wait, the answers the attackers got and the
# memory of the login flood, and fails where a bound is broken.
#
#   bash scripts/abuse.sh
#   ABUSE_SECS=60 bash scripts/abuse.sh
#   TALLY_BIN=/path/to/other/tally bash scripts/abuse.sh   # measure another build
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p tally
export ABUSE_SECS="${ABUSE_SECS:-30}"
export TALLY_BIN="${TALLY_BIN:-$PWD/target/release/tally}"
cargo test --release --quiet --test abuse -- --nocapture --test-threads 1
