#!/usr/bin/env bash
# Kills cluster nodes under load, many times, and checks that nothing
# acknowledged is lost or made twice. Three NATS servers and three Tally
# nodes (release build) on loopback; WRITERS clients each make changes
# through random nodes (one unit consumed per change, each under its own
# Idempotency-Key and retried until acknowledged, so each is made exactly
# once); meanwhile a Tally node is SIGKILLed and started again every
# KILL_EVERY seconds, KILLS times (with NATS_KILLS=1, a NATS server too,
# every third time). At the end every node must hold exactly the number
# of acknowledged changes, and the nodes' state digests must agree.
#
#   KILLS=200 bash scripts/cluster-chaos.sh      # the long version
#   KILLS=5 bash scripts/cluster-chaos.sh        # a short one
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS="${KILLS:-20}"
KILL_EVERY="${KILL_EVERY:-2}"
WRITERS="${WRITERS:-4}"
NATS_KILLS="${NATS_KILLS:-0}"
OUT="${OUT:-target/chaos}"
NATS="${NATS:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
rm -rf "$OUT" && mkdir -p "$OUT"
cargo build --release --bin tally --quiet
T=target/release/tally
cat > "$OUT/catalog.json" <<'JSON'
{"tenants": [{"name": "Chaos",
  "api_keys": [{"api_key": "chaos-key", "shared_key": "chaos-shared", "role": "admin"}],
  "products": [{"short_code": "c", "name": "C", "authorization_method": "license-key"}],
  "customers": [{"email": "c@example.com"}],
  "licenses": [{"product": "c", "license_key": "CHAOS-1", "customer": "c@example.com",
    "license_type": "perpetual", "max_activations": 1,
    "features": [{"code": "units", "name": "units", "feature_type": "consumption",
                  "max_consumption": 1000000000}]}]}]}
JSON
URLS="nats://127.0.0.1:24222,nats://127.0.0.1:24223,nats://127.0.0.1:24224"
declare -A NPID TPID

start_nats() {
  "$NATS" -a 127.0.0.1 -p $((24222 + $1)) -n "n$1" -js -sd "$OUT/nats$1" --cluster_name chaos \
    --cluster nats://127.0.0.1:$((26222 + $1)) \
    --routes nats://127.0.0.1:26222,nats://127.0.0.1:26223,nats://127.0.0.1:26224 \
    >>"$OUT/nats$1.log" 2>&1 &
  NPID[$1]=$!
}
start_node() {
  "$T" serve --listen 127.0.0.1:$((28880 + $1)) --data-dir "$OUT/node$1" --catalog "$OUT/catalog.json" \
    --cluster "$URLS" --node-id "c$1" --cluster-stream chaos --snapshot-interval 5 --no-sign \
    >>"$OUT/node$1.log" 2>&1 &
  TPID[$1]=$!
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$((28880 + $1))/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "node $1 did not start" >&2; exit 1
}
cleanup() {
  for p in "${TPID[@]}" "${NPID[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
for i in 0 1 2; do start_nats $i; done
sleep 1
for i in 0 1 2; do start_node $i; done

# A writer: changes w<writer>-<n>, each retried under its key until acknowledged.
writer() {
  local w=$1 n=0
  while [ ! -f "$OUT/stop" ]; do
    n=$((n + 1))
    until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 15 \
        -H 'Authorization: Bearer chaos-key' -H "Idempotency-Key: w$w-$n" \
        -H 'Content-Type: application/json' -d '{"units": 1}' \
        "http://127.0.0.1:$((28880 + RANDOM % 3))/v1/licenses/CHAOS-1/features/units/usage")" = 200 ]; do
      sleep 0.1
    done
    echo "$n" > "$OUT/writer$w"
  done
}
WPIDS=()
for w in $(seq 1 "$WRITERS"); do writer "$w" & WPIDS+=($!); done

for k in $(seq 1 "$KILLS"); do
  sleep "$KILL_EVERY"
  victim=$((RANDOM % 3))
  kill -9 "${TPID[$victim]}" 2>/dev/null || true
  wait "${TPID[$victim]}" 2>/dev/null || true
  if [ "$NATS_KILLS" = 1 ] && [ $((k % 3)) = 0 ]; then
    n=$((RANDOM % 3)); kill -9 "${NPID[$n]}"; sleep 1; start_nats "$n"
  fi
  start_node "$victim"
  echo "kill $k: node $victim killed and started again"
done
touch "$OUT/stop"
# Each writer finishes the change it has begun (until acknowledged).
for p in "${WPIDS[@]}"; do wait "$p"; done
acked=0
for w in $(seq 1 "$WRITERS"); do acked=$((acked + $(cat "$OUT/writer$w" 2>/dev/null || echo 0))); done
# Every node caught up: the same sequence, the same digest, the same total.
sleep 3
fail=0; first=""
for i in 0 1 2; do
  tok=$(cat "$OUT/node$i/admin_token")
  c=$(curl -s -H "Authorization: Bearer $tok" "http://127.0.0.1:$((28880 + i))/admin/v1/cluster")
  used=$(curl -s -H 'Authorization: Bearer chaos-key' "http://127.0.0.1:$((28880 + i))/v1/licenses/CHAOS-1" \
    | python3 -c 'import json,sys; print([f["usage"]["used"] for f in json.load(sys.stdin)["features"]][0])')
  d=$(echo "$c" | python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["digest_seq"], c["digest"])')
  echo "node $i: used $used, digest at $d"
  [ "$used" = "$acked" ] || fail=1
  [ -z "$first" ] && first="$d"
  [ "$d" = "$first" ] || fail=1
done
echo "kills $KILLS, acknowledged changes $acked: $([ $fail = 0 ] && echo 'every node exact, digests equal' || echo 'MISMATCH')"
exit $fail
