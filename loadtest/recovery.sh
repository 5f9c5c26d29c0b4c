#!/usr/bin/env bash
# Recovery at scale: 1,000,000 licenses with 4 features each (the generated
# catalog) plus about 1,000,000 log records (consumption adds), then a
# SIGKILL and a restart; prints the recovery time the server logs, the
# snapshot's size per license, and the log's size.
#
#   bash loadtest/recovery.sh            # LICENSES=1000000 LOAD_SECS=30 ROUNDS=3
#   OLD=<another build of tally> bash loadtest/recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
LICENSES="${LICENSES:-1000000}"
LOAD_SECS="${LOAD_SECS:-30}"
OUT="${OUT:-target/loadtest/recovery}"
PORT=18741
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
CAT="$OUT/catalog-$LICENSES.json"
[ -f "$CAT" ] || "$T" gen-catalog --licenses "$LICENSES" --out "$CAT"
rm -rf "$OUT/data"
# First start: the catalog is loaded and snapshotted; no periodic snapshots,
# so every record of the load stays in the log.
"$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$CAT" --no-sign \
  --fsync never --snapshot-interval 0 >"$OUT/first.log" 2>&1 &
pid=$!
wait_up
"$LT" run --target 127.0.0.1:$PORT --scenario consume --licenses "$LICENSES" --connections 64 \
  --duration "$LOAD_SECS" --warmup 0 --quiet --json "$OUT/load.json"
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
"$T" inspect --data-dir "$OUT/data"
snap=$(ls "$OUT"/data/snapshot-*.snap)
echo "snapshot: $(stat -c %s "$snap") bytes, $(( $(stat -c %s "$snap") / LICENSES )) bytes per license"
echo "log: $(cat "$OUT"/data/wal-*.log | wc -c) bytes"
# Restarts, each on a fresh copy (a start that replayed many records writes a
# snapshot before serving, so the next start would have nothing to replay);
# alternating with another build when OLD is given (the stored format is
# the same).
ROUNDS="${ROUNDS:-3}"
builds="new"; [ -n "${OLD:-}" ] && builds="old new"
for i in $(seq 1 "$ROUNDS"); do
  for which in $builds; do
    B="$T"; [ "$which" = old ] && B="$OLD"
    rm -rf "$OUT/copy"; cp -r "$OUT/data" "$OUT/copy"
    "$B" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/copy" --no-sign --snapshot-interval 0 >"$OUT/restart-$i-$which.log" 2>&1 &
    pid=$!
    wait_up
    echo "restart $i $which: $(sed 's/\x1b\[[0-9;]*m//g' "$OUT/restart-$i-$which.log" | grep -m1 -o "recovered in.*")"
    grep -E "VmHWM|VmRSS" "/proc/$pid/status" | tr -s ' \t' ' ' | paste -sd' '
    kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  done
done
