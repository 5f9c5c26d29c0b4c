# Helpers shared by the measurement scripts (sourced, not run).

# `taskset -c CPU` when pinning works here, else nothing.
pin() { if taskset -c "$1" true 2>/dev/null; then echo "taskset -c $1"; fi; }

# Waits until the server on $PORT answers /healthz (up to 2 minutes).
wait_up() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server on port $PORT did not come up" >&2
  exit 1
}

# The sample $2 (no labels) of the server on port $1's /metrics.
metric() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'; }

# The median of the numbers in $1 (space separated).
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The throughput, req/s rounded, of a `loadtest run --json` report.
rps_of() { python3 -c "import json,sys;print(round(json.load(open(sys.argv[1]))['throughput_rps']))" "$1"; }

# Starts three clustered NATS JetStream servers (client ports BASE..BASE+2,
# route ports BASE+2000..) with their stores under $1; their pids go to $2.
start_nats() {
  local dir=$1 pids=$2 base=${3:-14222}
  local nats="${NATS:-$(command -v nats-server || echo /usr/sbin/nats-server)}"
  local r=$((base + 2000))
  rm -rf "$dir"
  for i in 0 1 2; do
    "$nats" -a 127.0.0.1 -p $((base + i)) -n "n$i" -js -sd "$dir/n$i" \
      --cluster_name bench --cluster nats://127.0.0.1:$((r + i)) \
      --routes "nats://127.0.0.1:$r,nats://127.0.0.1:$((r + 1)),nats://127.0.0.1:$((r + 2))" \
      >/dev/null 2>&1 &
    echo $! >> "$pids"
  done
}
