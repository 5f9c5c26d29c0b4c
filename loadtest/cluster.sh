#!/usr/bin/env bash
# A single node against a three-node cluster on three NATS JetStream servers,
# one scenario, alternating rounds, each side's median and their ratio.
#
#   SCENARIO=check bash loadtest/cluster.sh     # the check on ONE cluster node
#   SCENARIO=consume bash loadtest/cluster.sh   # durable consumption, spread
#                                               # over the three nodes
#
# The single node runs with --fsync always; the cluster's durability is a
# JetStream quorum (its servers fsync as they are configured: here the
# default). On one machine every process shares the cores (here 2): the
# cluster's figures are a lower bound. On separate machines run the NATS
# servers and nodes as docs/cluster.md shows, and point loadtest's --target
# at the nodes (comma-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
SCENARIO="${SCENARIO:-check}"
ROUNDS="${ROUNDS:-3}"
ROUND_SECS="${ROUND_SECS:-8}"
OUT="${OUT:-target/loadtest/cluster}"
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$T" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
ARGS="--no-sign --snapshot-interval 0"

start_cluster() {
  start_nats "$OUT/nats" "$OUT/pids" 14222
  local urls="nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
  for i in 0 1 2; do
    rm -rf "$OUT/node$i"
    PORT=$((18880 + i))
    # shellcheck disable=SC2086
    "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/node$i" --catalog "$OUT/catalog.json" \
      --cluster "$urls" --node-id "n$i" --cluster-stream "bench" $ARGS >"$OUT/node$i.log" 2>&1 &
    echo $! >> "$OUT/pids"
    wait_up
  done
}

stop_all() {
  [ -f "$OUT/pids" ] || return 0
  while read -r p; do kill -TERM "$p" 2>/dev/null || true; done < "$OUT/pids"
  while read -r p; do wait "$p" 2>/dev/null || true; done < "$OUT/pids"
  rm -f "$OUT/pids"
}
trap stop_all EXIT

declare -A results
for r in $(seq 1 "$ROUNDS"); do
  for which in single cluster; do
    rm -f "$OUT/pids"
    if [ "$which" = single ]; then
      rm -rf "$OUT/single"
      PORT=18870
      # shellcheck disable=SC2086
      "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/single" --catalog "$OUT/catalog.json" \
        --fsync always $ARGS >/dev/null 2>&1 &
      echo $! >> "$OUT/pids"
      wait_up
      targets="127.0.0.1:18870"
    else
      start_cluster
      if [ "$SCENARIO" = check ]; then targets="127.0.0.1:18880"
      else targets="127.0.0.1:18880,127.0.0.1:18881,127.0.0.1:18882"; fi
    fi
    json="$OUT/$SCENARIO-$which-$r.json"
    "$LT" run --target "$targets" --scenario "$SCENARIO" --licenses 1000 \
      --connections 64 --duration "$ROUND_SECS" --warmup 2 --quiet --json "$json"
    stop_all
    rps=$(rps_of "$json")
    echo "round $r $which: $rps req/s"
    results[$which]="${results[$which]:-} $rps"
  done
done
s=$(median "${results[single]}"); c=$(median "${results[cluster]}")
echo "median $SCENARIO: single node $s req/s, cluster $c req/s: cluster / single = $(python3 -c "print(round($c/$s,2))")"
