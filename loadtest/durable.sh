#!/usr/bin/env bash
# Durable consumption: `--fsync always` against `--fsync never` (and
# interval:10), alternating rounds on one machine, 64 connections, server on
# core 0 and load on core 1. Prints each round and the medians' ratio.
#
#   bash loadtest/durable.sh                 # 5 rounds x 10 s, unsigned answers
#   ROUNDS=3 ROUND_SECS=5 SIGN=1 bash loadtest/durable.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
ROUNDS="${ROUNDS:-5}"
ROUND_SECS="${ROUND_SECS:-10}"
MODES="${MODES:-never always interval:10}"
SCENARIO="${SCENARIO:-consume}"
OUT="${OUT:-target/loadtest/durable}"
SIGN_ARG="--no-sign"; [ "${SIGN:-0}" = 1 ] && SIGN_ARG=""
PORT=18731
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$T" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
declare -A results
for r in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    rm -rf "$OUT/data"
    $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$OUT/catalog.json" \
      --fsync "$mode" $SIGN_ARG --snapshot-interval 0 >/dev/null 2>"$OUT/server.log" &
    pid=$!
    wait_up
    json="$OUT/$SCENARIO-${mode//:/-}-$r.json"
    $(pin 1) "$LT" run --target 127.0.0.1:$PORT --scenario "$SCENARIO" --licenses 1000 \
      --connections 64 --duration "$ROUND_SECS" --warmup 2 --quiet --json "$json"
    kill -TERM "$pid"; wait "$pid" || true
    rps=$(rps_of "$json")
    p99=$(python3 -c "import json,sys;d=json.load(open('$json'));print(d['latency_us']['p99'])")
    echo "round $r  fsync $mode: $rps req/s, p99 $p99 us"
    results[$mode]="${results[$mode]:-} $rps"
  done
done
never=$(median "${results[never]}")
for mode in $MODES; do
  m=$(median "${results[$mode]}")
  echo "median fsync $mode: $m req/s ($(python3 -c "print(round($m/$never,2))") x never)"
done
