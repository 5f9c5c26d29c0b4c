#!/usr/bin/env bash
# Latency while periodic snapshots of 1,000,000 licenses run: the `mixed`
# scenario (90 % checks; its consumption keeps the log growing, so every
# period has something to snapshot) at a fixed rate, open loop, against the
# same server with snapshots off and with a snapshot every 5 s; server on
# core 0, load on core 1. Prints both reports' p99 and their ratio.
#
#   bash loadtest/snapshot-p99.sh        # LICENSES=1000000 RATE=20000 SECS=40
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
LICENSES="${LICENSES:-1000000}"
RATE="${RATE:-20000}"
SECS="${SECS:-40}"
OUT="${OUT:-target/loadtest/snapshot-p99}"
PORT=18751
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
CAT="target/loadtest/recovery/catalog-$LICENSES.json"
[ -f "$CAT" ] || { mkdir -p "$(dirname "$CAT")"; "$T" gen-catalog --licenses "$LICENSES" --out "$CAT"; }
# One data directory holding the catalog's snapshot, reused by both runs.
if [ ! -d "$OUT/base" ]; then
  "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/base" --catalog "$CAT" --no-sign --snapshot-interval 0 >"$OUT/base.log" 2>&1 &
  pid=$!; wait_up; kill -TERM "$pid"; wait "$pid" || true
fi
for interval in 0 5; do
  rm -rf "$OUT/data"; cp -r "$OUT/base" "$OUT/data"; rm -f "$OUT/data/LOCK"
  $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --no-sign --fsync never \
    --snapshot-interval "$interval" >"$OUT/server-$interval.log" 2>&1 &
  pid=$!; wait_up
  $(pin 1) "$LT" run --target 127.0.0.1:$PORT --scenario mixed --licenses "$LICENSES" --connections 64 \
    --rate "$RATE" --duration "$SECS" --warmup 3 --quiet --json "$OUT/mixed-$interval.json"
  kill -TERM "$pid"; wait "$pid" || true
  snaps=$(sed 's/\x1b\[[0-9;]*m//g' "$OUT/server-$interval.log" | grep -c "storage::store: snapshot at record" || true)
  echo "snapshot interval $interval s: $snaps periodic snapshots during the run; $(python3 -c "
import json; d=json.load(open('$OUT/mixed-$interval.json')); l=d['latency_us']
print(f\"{d['throughput_rps']:.0f} req/s, p50 {l['p50']:.0f} us, p99 {l['p99']:.0f} us, p99.9 {l['p999']:.0f} us, max {l['max']:.0f} us\")")"
  sed 's/\x1b\[[0-9;]*m//g' "$OUT/server-$interval.log" | grep "storage::store: snapshot at record" | head -3 || true
done
python3 -c "
import json
a=json.load(open('$OUT/mixed-0.json'))['latency_us']['p99']; b=json.load(open('$OUT/mixed-5.json'))['latency_us']['p99']
print(f'p99 with snapshots / without: {b/a:.2f}')"
