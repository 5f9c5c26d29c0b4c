#!/usr/bin/env bash
# The native API against the LicenseSpring surface, side by side on one
# server and one machine, alternating rounds (server on core 0, load on
# core 1, 64 connections, 1,000 generated licenses):
#
# 1. `native-check` (POST /v1/check, bearer key) against `check` (signed
#    LicenseSpring check_license_feature, as shipped) on one server;
# 2. `native-reserve` (reserve 1 unit, then commit it: two durable changes
#    per pair) against `consume` (add_feature_consumption) on one server with
#    `--fsync always` and `--no-sign` (LicenseSpring's consumption answers
#    are otherwise each signed with RSA; native answers are not signed).
#
#   bash loadtest/native.sh                     # 5 rounds x 10 s
#   ROUNDS=3 ROUND_SECS=5 bash loadtest/native.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
ROUNDS="${ROUNDS:-5}"
ROUND_SECS="${ROUND_SECS:-10}"
OUT="${OUT:-target/loadtest/native}"
PORT=18731
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$T" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
declare -A results

# pair NAME "SERVER ARGS" SCENARIO_A SCENARIO_B
pair() {
  local name="$1" args="$2" a="$3" b="$4"
  rm -rf "$OUT/data"
  # shellcheck disable=SC2086
  $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$OUT/catalog.json" \
    --snapshot-interval 0 $args >/dev/null 2>"$OUT/server-$name.log" &
  pid=$!
  wait_up
  for r in $(seq 1 "$ROUNDS"); do
    for s in "$a" "$b"; do
      json="$OUT/$name-$s-$r.json"
      $(pin 1) "$LT" run --target 127.0.0.1:$PORT --scenario "$s" --licenses 1000 \
        --connections 64 --duration "$ROUND_SECS" --warmup 2 --quiet --json "$json"
      rps=$(rps_of "$json")
      p99=$(python3 -c "import json;d=json.load(open('$json'));print(d['latency_us']['p99'])")
      errs=$(python3 -c "import json;d=json.load(open('$json'));print(sum(v for k,v in d.get('statuses',{}).items() if int(k)>=400))")
      echo "$name round $r  $s: $rps req/s, p99 $p99 us, $errs error answers"
      results[$name-$s]="${results[$name-$s]:-} $rps"
    done
  done
  kill -TERM "$pid"; wait "$pid" || true
  local ma mb
  ma=$(median "${results[$name-$a]}"); mb=$(median "${results[$name-$b]}")
  echo "median $name: $a $ma req/s, $b $mb req/s: $a / $b = $(python3 -c "print(round($ma/$mb,2))")"
}

[ "${ONLY:-}" = durable ] || pair check "" native-check check
pair durable "--fsync always --no-sign" native-reserve consume
