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
compare floating-never --scenario floating --tally-arg=--no-sign --tally-arg=--fsync=never --no-redis --no-wrk
compare consume --scenario consume
compare consume-nosign --scenario consume --tally-arg=--no-sign --no-wrk
compare mixed --scenario mixed --no-wrk
compare check-pipelined --scenario check --pipeline 16 --no-redis --no-wrk
# Assignment churn (durable), issue #18's row: Qlik and Yext against B.
compare qlik --scenario qlik --no-redis --no-wrk
compare yext --scenario yext --no-redis --no-wrk

# Catalog size: 1k against 1M licenses (4 features each), the same load;
# unsigned, then signed with the default settings (once the signed-answer
# filler's first pass is over).
echo "== catalog size, unsigned (issue #18)"
ROUNDS=3 ROUND_SECS="$ROUND_SECS" OUT="$OUT/size" bash loadtest/size.sh | tee "$OUT/size.txt"
echo "== catalog size, signed (issue #18)"
SIGN=1 ROUNDS=3 ROUND_SECS="$ROUND_SECS" OUT="$OUT/size-signed" bash loadtest/size.sh | tee "$OUT/size-signed.txt"

echo "== signed consumption against openssl speed rsa2048 (issue #18)"
ROUNDS=3 ROUND_SECS="$ROUND_SECS" bash loadtest/signing.sh | tee "$OUT/signing.txt"

echo "== durable consumption: --fsync always against never and interval:10 (issue #18)"
ROUNDS=3 ROUND_SECS="$ROUND_SECS" bash loadtest/durable.sh | tee "$OUT/durable.txt"

echo "== the scaling table: 1 and 2 server cores, both runtimes (issue #18)"
ROUNDS=3 ROUND_SECS="$ROUND_SECS" bash loadtest/scaling.sh | tee "$OUT/scaling.txt"

echo "== recovery at 1M licenses + about 1M records (issue #18)"
LOAD_SECS=12 bash loadtest/recovery.sh | tee "$OUT/recovery.txt"

echo "== catalog load at 1M licenses: time, resident memory, peak (issue #18)"
bash loadtest/load-time.sh | tee "$OUT/load-time.txt"

echo "== memory (in-process, 1M licenses)"
cargo bench --bench memory 2>/dev/null | tail -2 | tee "$OUT/memory.txt"

echo "== simd-json against serde_json (issue #18)"
cargo bench --bench json 2>/dev/null | grep -E '^json|time:' | tee "$OUT/json.txt"

echo "== criterion (in-process)"
cargo bench --bench engine 2>/dev/null | grep -E '^[a-z_/0-9]+ +time:|^[a-z_/0-9]+$|time:' | tee "$OUT/criterion.txt"
