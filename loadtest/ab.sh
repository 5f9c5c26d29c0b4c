#!/usr/bin/env bash
# Two builds of tally side by side: alternating rounds of one scenario
# against each (server on core 0, load on core 1, 64 connections, 1,000
# generated licenses), then each build's median. For the cost of a change:
#
#   git worktree add /tmp/before <commit> && \
#     (cd /tmp/before && CARGO_TARGET_DIR=/tmp/tgt-before cargo build --release --bin tally)
#   OLD=/tmp/tgt-before/release/tally SCENARIO=consume ARGS="--fsync always --no-sign" \
#     bash loadtest/ab.sh
#
# OLD_CATALOG / NEW_CATALOG give each side its own catalog, and OLD_ARGS /
# NEW_ARGS its own flags (the cost of a setting, with OLD=NEW: a webhook
# subscription, or --no-metrics).
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
OLD="${OLD:?OLD=<the other build of tally>}"
NEW="${NEW:-target/release/tally}"
SCENARIO="${SCENARIO:-check}"
ROUNDS="${ROUNDS:-5}"
ROUND_SECS="${ROUND_SECS:-8}"
OUT="${OUT:-target/loadtest/ab}"
PORT=18771
mkdir -p "$OUT"
cargo build --release --workspace --quiet
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$NEW" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
declare -A results
for r in $(seq 1 "$ROUNDS"); do
  for which in old new; do
    if [ "$which" = old ]; then T="$OLD"; C="${OLD_CATALOG:-$OUT/catalog.json}"; X="${OLD_ARGS:-}"
    else T="$NEW"; C="${NEW_CATALOG:-$OUT/catalog.json}"; X="${NEW_ARGS:-}"; fi
    rm -rf "$OUT/data"
    # shellcheck disable=SC2086
    $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$C" \
      --snapshot-interval 0 ${ARGS:-} $X >/dev/null 2>&1 &
    pid=$!
    wait_up
    json="$OUT/$SCENARIO-$which-$r.json"
    $(pin 1) "$LT" run --target 127.0.0.1:$PORT --scenario "$SCENARIO" --licenses 1000 \
      --connections 64 --duration "$ROUND_SECS" --warmup 2 --quiet --json "$json"
    kill -TERM "$pid"; wait "$pid" || true
    rps=$(rps_of "$json")
    echo "round $r $which: $rps req/s"
    results[$which]="${results[$which]:-} $rps"
  done
done
o=$(median "${results[old]}"); n=$(median "${results[new]}")
echo "median $SCENARIO: old $o req/s, new $n req/s: new / old = $(python3 -c "print(round($n/$o,2))")"
