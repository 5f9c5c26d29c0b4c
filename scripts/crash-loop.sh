#!/usr/bin/env bash
# The crash loop of tests/durability.rs at length: the real server binary
# under concurrent changes, killed with SIGKILL at random moments and
# restarted, N times (default 1,000); every acknowledged change must survive.
#   scripts/crash-loop.sh [CYCLES]
set -euo pipefail
cd "$(dirname "$0")/.."
export TALLY_CRASH_CYCLES="${1:-1000}"
exec cargo test --release --test durability acknowledged_changes_survive_sigkill_crash_loop -- --nocapture
