#!/usr/bin/env bash
# The measurements behind docs/performance.md, on one machine in
# one run. Takes about 40 minutes on a 2-core machine; results land in
# target/loadtest/ (JSON, SVG) and a summary is printed.
#
#   bash loadtest/run-all.sh            # everything
#   ROUNDS=5 ROUND_SECS=10 bash loadtest/run-all.sh
#
# Needs redis-server and wrk (Debian packages) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-5}"
ROUND_SECS="${ROUND_SECS:-10}"
OUT="${OUT:-target/loadtest}"
mkdir -p "$OUT"

cargo build --release --workspace --quiet
LT=target/release/loadtest
TALLY=target/release/tally

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(date -u +%F)"

compare() {
  local name="$1"; shift
  echo "== compare $name"
  "$LT" compare --rounds "$ROUNDS" --round-secs "$ROUND_SECS" --out "$OUT/$name" "$@" | tee "$OUT/$name.txt"
}

# Feature check with signed responses (Tally's default), then the other scenarios.
compare check --scenario check
compare check-nosign --scenario check --tally-arg=--no-sign --no-wrk
compare floating --scenario floating
compare floating-nosign --scenario floating --tally-arg=--no-sign --no-wrk
compare consume --scenario consume
compare consume-nosign --scenario consume --tally-arg=--no-sign --no-wrk
compare mixed --scenario mixed --no-wrk
compare check-pipelined --scenario check --pipeline 16 --no-redis --no-wrk

# Catalog size: 1k against 1M licenses (4 features each), same load, signing
# off (every distinct answer costs one RSA signature the first time it is
# sent; 4M distinct answers would measure RSA, not lookups).
size_run() {
  local n="$1"
  local dir="$OUT/size-$n"
  rm -rf "$dir"; mkdir -p "$dir"
  "$TALLY" gen-catalog --licenses "$n" --out "$dir/catalog.json" >/dev/null
  taskset -c 0 "$TALLY" serve --listen 127.0.0.1:18480 --data-dir "$dir/data" \
    --catalog "$dir/catalog.json" --no-sign 2>"$dir/server.log" &
  local pid=$!
  until curl -sf http://127.0.0.1:18480/healthz >/dev/null; do sleep 0.5; done
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  echo "licenses $n: resident after load ${rss} KiB ($(( rss * 1024 / (n * 4) )) bytes per feature, all included)" | tee "$dir/memory.txt"
  grep -o 'loaded catalog.*' "$dir/server.log" | tee -a "$dir/memory.txt" || true
  for i in 1 2 3; do
    taskset -c 1 "$LT" run --quiet --target 127.0.0.1:18480 --licenses "$n" \
      --duration "$ROUND_SECS" --warmup 2 --json "$dir/run$i.json"
    python3 -c "import json,sys; d=json.load(open('$dir/run$i.json')); print('licenses $n run $i: %.0f req/s p99 %.1f us' % (d['throughput_rps'], d['latency_us']['p99']))" | tee -a "$dir/memory.txt"
  done
  kill "$pid"; wait "$pid" || true
}
size_run 1000
size_run 1000000

echo "== signed consumption against openssl speed rsa2048 (issue #18)"
ROUNDS=3 ROUND_SECS="$ROUND_SECS" bash loadtest/signing.sh | tee "$OUT/signing.txt"

echo "== catalog load at 1M licenses: time, resident memory, peak (issue #18)"
bash loadtest/load-time.sh | tee "$OUT/load-time.txt"

echo "== memory (in-process, 1M licenses)"
cargo bench --bench memory 2>/dev/null | tail -2 | tee "$OUT/memory.txt"

echo "== criterion (in-process)"
cargo bench --bench engine 2>/dev/null | grep -E '^[a-z_/0-9]+ +time:|^[a-z_/0-9]+$|time:' | tee "$OUT/criterion.txt"
