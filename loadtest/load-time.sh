#!/usr/bin/env bash
# Catalog load at LICENSES licenses (4 features each, each activated on one
# device: `tally gen-catalog`): the server's own "loaded catalog ... in" time,
# the time from its start until it answers /healthz (the load, the initial
# fixture and the first snapshot written, the fault rules read), its
# resident memory once it serves, and its peak, pinned to core 0;
# alternating with another build when OLD is given.
#
#   bash loadtest/load-time.sh
#   OLD=<another build of tally> ROUNDS=2 bash loadtest/load-time.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
LICENSES="${LICENSES:-1000000}"
ROUNDS="${ROUNDS:-2}"
OUT="${OUT:-target/loadtest/load-time}"
PORT=18773
mkdir -p "$OUT"
cargo build --release --bin tally --quiet
NEW="${NEW:-target/release/tally}"
catalog="$OUT/catalog-$LICENSES.json"
[ -f "$catalog" ] || "$NEW" gen-catalog --licenses "$LICENSES" --out "$catalog" 2>/dev/null
builds="new"; [ -n "${OLD:-}" ] && builds="old new"
for r in $(seq 1 "$ROUNDS"); do
  for which in $builds; do
    T="$NEW"; [ "$which" = old ] && T="$OLD"
    rm -rf "$OUT/data"
    started=$(date +%s.%N)
    $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$catalog" \
      --no-sign --snapshot-interval 0 >"$OUT/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 2400); do
      curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
      sleep 0.05
    done
    wait_up
    serving=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)")
    secs=$(grep -o 'loaded catalog .* in [0-9.]*s' "$OUT/server.log" | grep -o '[0-9.]*s$')
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    peak=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    echo "round $r $which: catalog loaded in $secs, serving after ${serving}s, resident $((rss / 1024)) MiB, peak $((peak / 1024)) MiB"
    kill -TERM "$pid"; wait "$pid" || true
  done
done
