#!/usr/bin/env bash
# A cluster's figures besides throughput (that is loadtest/cluster.sh), on
# three NATS JetStream servers and three release nodes:
#
#   lag        replication lag, acknowledgement on node 0 to application
#              on node 1 (`loadtest lag`), idle and under a steady load of
#              LOAD_RATE consumptions/s spread over the three nodes;
#   catchup    node 2 SIGKILLed, DOWN_SECS of that load through nodes 0 and
#              1, node 2 started again under the load: seconds until it
#              serves (it serves once it applied the stream up to where it
#              stood when it started) and the messages it applied to get there;
#   bootstrap  a new cluster on a catalog of BOOT_LICENSES licenses: the
#              first node's start (catalog loaded, snapshot published), then
#              a wiped node's start (the published snapshot loaded).
#
#   bash loadtest/cluster-figures.sh
#   PARTS=bootstrap BOOT_LICENSES=1000000 bash loadtest/cluster-figures.sh
#
# On one machine every process shares the cores (here 2): lower bounds. On
# separate machines start the servers and nodes as docs/cluster.md shows
# and run the same `loadtest lag` / `loadtest run` commands against them.
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
OUT="${OUT:-target/loadtest/cluster-figures}"
PARTS="${PARTS:-lag catchup bootstrap}"
LOAD_RATE="${LOAD_RATE:-3000}"
DOWN_SECS="${DOWN_SECS:-60}"
BOOT_LICENSES="${BOOT_LICENSES:-1000000}"
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
URLS="nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
PIDS="$OUT/pids"

stop_all() {
  [ -f "$PIDS" ] || return 0
  while read -r p; do kill -9 "$p" 2>/dev/null || true; done < "$PIDS"
  while read -r p; do wait "$p" 2>/dev/null || true; done < "$PIDS"
  rm -f "$PIDS"
}
trap stop_all EXIT

# node I CATALOG STREAM: starts cluster node I in the background.
node() {
  local i=$1 catalog=$2 stream=$3
  "$T" serve --listen 127.0.0.1:$((18880 + i)) --data-dir "$OUT/node$i" --catalog "$catalog" \
    --cluster "$URLS" --node-id "n$i" --cluster-stream "$stream" \
    --no-sign --snapshot-interval 10 >>"$OUT/node$i.log" 2>&1 &
  echo $! > "$OUT/node$i.pid"
  echo $! >> "$PIDS"
}

# up I: seconds until node I answers /healthz.
up() {
  local started; started=$(date +%s.%N)
  PORT=$((18880 + $1)) wait_up
  python3 -c "import sys;print(round(float(sys.argv[2])-float(sys.argv[1]),2))" "$started" "$(date +%s.%N)"
}

load() { # load NAME SECS TARGETS
  "$LT" run --target "$3" --scenario consume --licenses 1000 --connections 16 \
    --rate "$LOAD_RATE" --duration "$2" --warmup 0 --quiet --json "$OUT/load-$1.json"
}

lag_and_catchup() {
  stop_all; rm -rf "$OUT"/node*
  [ -f "$OUT/catalog.json" ] || "$T" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
  start_nats "$OUT/nats" "$PIDS" 14222
  for i in 0 1 2; do node "$i" "$OUT/catalog.json" figs; up "$i" >/dev/null; done
  all="127.0.0.1:18880,127.0.0.1:18881,127.0.0.1:18882"
  if [[ " $PARTS " == *" lag "* ]]; then
    echo "lag, idle:"
    "$LT" lag --from 127.0.0.1:18880 --to 127.0.0.1:18881 --samples 2000
    load lag 25 "$all" & bg=$!
    sleep 2
    echo "lag, under $LOAD_RATE consumptions/s spread over 3 nodes:"
    "$LT" lag --from 127.0.0.1:18880 --to 127.0.0.1:18881 --samples 2000
    wait "$bg"
  fi
  if [[ " $PARTS " == *" catchup "* ]]; then
    sleep 11 # node 2 writes a local snapshot (every 10 s)
    kill -9 "$(cat "$OUT/node2.pid")"
    echo "node 2 down for $DOWN_SECS s of $LOAD_RATE consumptions/s through nodes 0 and 1"
    load down "$DOWN_SECS" "127.0.0.1:18880,127.0.0.1:18881"
    echo "  the load while it was down: $(rps_of "$OUT/load-down.json") req/s acknowledged"
    load after 60 "127.0.0.1:18880,127.0.0.1:18881" & bg=$!
    sleep 1
    node 2 "$OUT/catalog.json" figs
    secs=$(up 2)
    from=$(grep -o 'resumed from local snapshot at stream sequence [0-9]*' "$OUT/node2.log" | tail -1 | grep -o '[0-9]*$' || echo 0)
    to=$(grep -o 'applied [0-9]*)' "$OUT/node2.log" | tail -1 | grep -o '[0-9]*')
    echo "catch-up: node 2 served after $secs s, having applied $((to - from)) messages (from its snapshot at $from to $to) under the load"
    kill "$bg" 2>/dev/null || true; wait "$bg" 2>/dev/null || true
  fi
  stop_all
}

bootstrap() {
  stop_all; rm -rf "$OUT"/node*
  big="$OUT/catalog-$BOOT_LICENSES.json"
  [ -f "$big" ] || "$T" gen-catalog --licenses "$BOOT_LICENSES" --out "$big" 2>/dev/null
  start_nats "$OUT/nats" "$PIDS" 14222
  node 0 "$big" boot
  echo "bootstrap at $BOOT_LICENSES licenses: first node (catalog loaded, snapshot published) served after $(up 0) s"
  snap=$(ls -S "$OUT"/node0/snapshot-*.snap | head -1)
  echo "  its snapshot: $(du -h "$snap" | cut -f1)"
  node 1 "$big" boot
  echo "  a wiped node (the published snapshot loaded) served after $(up 1) s"
  grep -o 'bootstrapped from the published snapshot.*' "$OUT/node1.log" | head -1
  stop_all
}

if [[ " $PARTS " == *" lag "* || " $PARTS " == *" catchup "* ]]; then lag_and_catchup; fi
if [[ " $PARTS " == *" bootstrap "* ]]; then bootstrap; fi
