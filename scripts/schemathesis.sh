#!/usr/bin/env bash
# Schemathesis against the real binary for longer than CI does:
#   scripts/schemathesis.sh [EXAMPLES_PER_OPERATION (default 500)]
# Starts `tally serve` with the demo catalog in a temporary data directory and
# checks every document Tally serves (server errors, status codes, content
# types, response schemas). Needs `pip install schemathesis==4.32.5`
# (TALLY_SCHEMATHESIS names the executable; .ci/run installs one).
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-500}"
st="${TALLY_SCHEMATHESIS:-target/sdk-venv/bin/schemathesis}"
cargo build --release --quiet
data="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$data"' EXIT
target/release/tally serve --catalog examples/demo.json --data-dir "$data/d" \
  --listen 127.0.0.1:18181 >"$data/log" 2>&1 &
pid=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18181/healthz >/dev/null && break; sleep 0.2; done
"$st" run http://127.0.0.1:18181/v1/openapi.json -H "Authorization: Bearer demo-api-key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --max-examples "$examples" --exclude-path /v1/ledger/stream
