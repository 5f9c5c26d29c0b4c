#!/usr/bin/env bash
# Signed consumption against the machine's RSA-2048 signing rate, in one run.
# The server (release, signing on, --fsync never) is pinned to core 0 and
# the load to core 1; every consumption answer's body is new (its total),
# so its LicenseSignature is computed fresh unless two concurrent answers
# read the same total. The figure that matters is the server's signatures
# per second (`tally_signatures_total` from /metrics, before and after the
# round) against `openssl speed rsa2048` sign/s on core 0, measured before
# and after the rounds.
#
#   bash loadtest/signing.sh
#   OLD=<another build of tally> bash loadtest/signing.sh   # both, alternating
set -euo pipefail
cd "$(dirname "$0")/.."
. loadtest/lib.sh
ROUNDS="${ROUNDS:-3}"
ROUND_SECS="${ROUND_SECS:-8}"
OUT="${OUT:-target/loadtest/signing}"
PORT=18772
mkdir -p "$OUT"
cargo build --release --workspace --quiet
NEW=target/release/tally
LT=target/release/loadtest
[ -f "$OUT/catalog.json" ] || "$NEW" gen-catalog --licenses 1000 --out "$OUT/catalog.json" 2>/dev/null

openssl_rate() { $(pin 0) openssl speed -seconds 3 rsa2048 2>/dev/null | awk '/^rsa 2048/ {print $6}'; }
signatures() { metric "$PORT" tally_signatures_total; }

before=$(openssl_rate)
declare -A rps sigs
builds="new"; [ -n "${OLD:-}" ] && builds="old new"
for r in $(seq 1 "$ROUNDS"); do
  for which in $builds; do
    T="$NEW"; [ "$which" = old ] && T="$OLD"
    rm -rf "$OUT/data"
    $(pin 0) "$T" serve --listen 127.0.0.1:$PORT --data-dir "$OUT/data" --catalog "$OUT/catalog.json" \
      --snapshot-interval 0 --fsync never >/dev/null 2>&1 &
    pid=$!
    wait_up
    s0=$(signatures || echo 0)
    json="$OUT/consume-$which-$r.json"
    $(pin 1) "$LT" run --target 127.0.0.1:$PORT --scenario consume --licenses 1000 \
      --connections 64 --duration "$ROUND_SECS" --warmup 0 --quiet --json "$json"
    s1=$(signatures || echo 0)
    kill -TERM "$pid"; wait "$pid" || true
    n=$(rps_of "$json")
    per_s=$(python3 -c "print(round((${s1:-0}-${s0:-0})/$ROUND_SECS))")
    echo "round $r $which: $n signed answers/s, $per_s signatures/s"
    rps[$which]="${rps[$which]:-} $n"; sigs[$which]="${sigs[$which]:-} $per_s"
  done
done
after=$(openssl_rate)
echo "openssl speed rsa2048 on core 0: $before sign/s before, $after after"
for which in $builds; do
  n=$(median "${rps[$which]}"); s=$(median "${sigs[$which]}")
  echo "median $which: $n signed answers/s, $s signatures/s = $(python3 -c "print(round($s/(($before+$after)/2),2))") x openssl's rate"
done
