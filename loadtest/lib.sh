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

# The median of the numbers in $1 (space separated).
median() { printf '%s\n' $1 | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The throughput, req/s rounded, of a `loadtest run --json` report.
rps_of() { python3 -c "import json,sys;print(round(json.load(open(sys.argv[1]))['throughput_rps']))" "$1"; }
