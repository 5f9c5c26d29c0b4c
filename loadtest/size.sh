#!/usr/bin/env bash
# Catalog size: the check scenario against a 1,000-license and a
# 1,000,000-license catalog (4 features each), both served side by side on
# core 0, the load generator on core 1, alternating ROUNDS times. Unsigned
# by default; SIGN=1 serves signed answers with the default settings and
# waits for the signed-answer filler's first pass (about 6 minutes at 1M
# licenses on one core: it signs 1.58M answers, its budget) before the
# rounds, as a user who started the server and waited would see it.
#
#   bash loadtest/size.sh              # ROUNDS=3 ROUND_SECS=8 by default
#   SIGN=1 bash loadtest/size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source loadtest/lib.sh

ROUNDS="${ROUNDS:-3}"
ROUND_SECS="${ROUND_SECS:-8}"
OUT="${OUT:-target/loadtest/size}"
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build --release --workspace --quiet
LT=target/release/loadtest
TALLY=target/release/tally

SIGN_ARG="--no-sign"; [ "${SIGN:-0}" = 1 ] && SIGN_ARG=""
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start() {
  local n="$1" port="$2"
  "$TALLY" gen-catalog --licenses "$n" --out "$OUT/catalog-$n.json" >/dev/null
  $(pin 0) "$TALLY" serve --listen "127.0.0.1:$port" --data-dir "$OUT/data-$n" \
    --catalog "$OUT/catalog-$n.json" $SIGN_ARG 2>"$OUT/server-$n.log" &
  pids+=($!)
  PORT=$port wait_up
  if [ -z "$SIGN_ARG" ]; then
    until grep -q "signed-answer filler:" "$OUT/server-$n.log"; do sleep 2; done
    grep -o "signed-answer filler:.*" "$OUT/server-$n.log"
  fi
  echo "licenses $n: resident after load $(awk '/VmRSS/ {print $2}' "/proc/$!/status") KiB"
  rm -f "$OUT/catalog-$n.json"
}
start 1000 18481
start 1000000 18482

sigs() { metric "$1" tally_signatures_total; }
before_1m=$(sigs 18482 || true)
for i in $(seq 1 "$ROUNDS"); do
  for n in 1000 1000000; do
    port=18481; [ "$n" = 1000000 ] && port=18482
    $(pin 1) "$LT" run --quiet --target "127.0.0.1:$port" --licenses "$n" \
      --duration "$ROUND_SECS" --warmup 2 --json "$OUT/run-$n-$i.json"
    python3 -c "import json; d=json.load(open('$OUT/run-$n-$i.json')); print('licenses $n round $i: %.0f req/s p99 %.0f us' % (d['throughput_rps'], d['latency_us']['p99']))"
  done
done
[ -z "$SIGN_ARG" ] && echo "fresh signatures during the rounds at 1M licenses: $(( $(sigs 18482) - before_1m ))"
true
