#!/usr/bin/env bash
# The scaling table: Tally's throughput on 1, 2, ... cores, for each runtime
# (`--runtime multi-thread` and `current-thread`) and scenario, alternating
# rounds, medians. The server is pinned to cores 0..C-1; the load generator
# (one thread per server core) to the next C cores when the machine has
# them, else it shares the server's cores and the row says "shared". On a
# 2-core machine only the 1-core rows are clean; run it on a bigger one for
# the rest (same script, same table):
#
#   bash loadtest/scaling.sh
#   CORES="1 2 4 8" SCENARIOS="check consume mixed" ROUNDS=3 bash loadtest/scaling.sh
#
# Scenarios are `loadtest run` ones; `consume` runs with `--fsync always`
# (durable), the others with the defaults (signed answers). Prints a
# Markdown table: per-core figures are the median divided by C.
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
NPROC=$(nproc)
CORES="${CORES:-1 2}"
RUNTIMES="${RUNTIMES:-multi-thread current-thread}"
SCENARIOS="${SCENARIOS:-check consume}"
ROUNDS="${ROUNDS:-3}"
ROUND_SECS="${ROUND_SECS:-6}"
OUT="${OUT:-target/loadtest/scaling}"
PORT=18775
mkdir -p "$OUT"
cargo build --release --workspace --quiet
T=target/release/tally
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$T" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null
# The cores a..b as a taskset list (nothing when pinning fails here).
pin_range() { if taskset -c "$1-$2" true 2>/dev/null; then echo "taskset -c $1-$2"; fi; }
declare -A results p99s
for c in $CORES; do
  [ "$c" -le "$NPROC" ] || { echo "skipping $c cores: this machine has $NPROC" >&2; continue; }
  if [ $((2 * c)) -le "$NPROC" ]; then load_cpus="$(pin_range "$c" $((2 * c - 1)))"; shared=""
  else load_cpus="$(pin_range 0 $((NPROC - 1)))"; shared=" (load shared)"; fi
  for scenario in $SCENARIOS; do
    args=""; [ "$scenario" = consume ] && args="--fsync always"
    for r in $(seq 1 "$ROUNDS"); do
      for rt in $RUNTIMES; do
        rm -rf "$OUT/data"
        # shellcheck disable=SC2086
        $(pin_range 0 $((c - 1))) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" \
          --catalog "$OUT/catalog.json" --snapshot-interval 0 --runtime "$rt" $args \
          >/dev/null 2>&1 &
        pid=$!
        wait_up
        json="$OUT/$c-$rt-$scenario-$r.json"
        $load_cpus "$LT" run --target 127.0.0.1:$PORT --scenario "$scenario" --licenses 1000 \
          --connections $((64 * c)) --threads "$c" --duration "$ROUND_SECS" --warmup 2 \
          --quiet --json "$json"
        kill -TERM "$pid"; wait "$pid" || true
        rps=$(rps_of "$json")
        p99=$(python3 -c "import json,sys;print(round(json.load(open(sys.argv[1]))['latency_us']['p99']))" "$json")
        echo "$c core(s)$shared, $rt, $scenario, round $r: $rps req/s, p99 $p99 us" >&2
        results["$c/$rt/$scenario"]="${results["$c/$rt/$scenario"]:-} $rps"
        p99s["$c/$rt/$scenario"]="${p99s["$c/$rt/$scenario"]:-} $p99"
      done
    done
  done
done
echo "| server cores | runtime | scenario | req/s (median of $ROUNDS) | per core | p99 us (median) |"
echo "| --- | --- | --- | --- | --- | --- |"
for c in $CORES; do
  [ "$c" -le "$NPROC" ] || continue
  shared=""; [ $((2 * c)) -le "$NPROC" ] || shared=" (load shared)"
  for scenario in $SCENARIOS; do
    for rt in $RUNTIMES; do
      m=$(median "${results["$c/$rt/$scenario"]}")
      p=$(median "${p99s["$c/$rt/$scenario"]}")
      echo "| $c$shared | $rt | $scenario | $m | $((m / c)) | $p |"
    done
  done
done
