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
