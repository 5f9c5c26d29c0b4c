#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser target with AFL++ (cargo-afl from
# crates.io, on the stable toolchain), each for FUZZ_SECS seconds (600 by
# default), starting from fuzz/corpus/<target>/. Prints executions, paths,
# crashes and hangs per target; findings land in target/fuzz/<target>/.
# Copy each crash or hang into fuzz/regressions/<target>/ once fixed
# (tests/fuzz_corpus.rs replays them on every test run).
#
#   bash scripts/fuzz.sh                      # every target, 10 minutes each
#   FUZZ_SECS=60 bash scripts/fuzz.sh wal_record snapshot
#   JOBS=2 bash scripts/fuzz.sh               # two targets at a time
set -euo pipefail
cd "$(dirname "$0")/.."

SECS="${FUZZ_SECS:-600}"
JOBS="${JOBS:-1}"
OUT="${FUZZ_OUT:-target/fuzz}"
# Per execution: time limit (ms) and memory limit (MiB): a target over
# either is a finding (a hang or unbounded memory).
EXEC_MS="${FUZZ_EXEC_MS:-1000}"
MEM_MB="${FUZZ_MEM_MB:-512}"

if ! cargo afl --version >/dev/null 2>&1; then
  cargo install --locked cargo-afl
fi
cargo afl config --build >/dev/null 2>&1 || true
(cd fuzz && cargo afl build --release --quiet)
BIN="fuzz/target/release/tally-fuzz"

if [ "$#" -gt 0 ]; then
  TARGETS=("$@")
else
  mapfile -t TARGETS < <(ls fuzz/corpus)
fi

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 AFL_QUIET=1
run_one() {
  local t="$1"
  rm -rf "${OUT:?}/$t"
  mkdir -p "$OUT/$t"
  TALLY_FUZZ_TARGET="$t" timeout $((SECS + 120)) \
    cargo afl fuzz -V "$SECS" -t "$EXEC_MS" -m "$MEM_MB" \
      -i "fuzz/corpus/$t" -o "$OUT/$t" -- "$BIN" >"$OUT/$t.log" 2>&1 || true
}

running=0
for t in "${TARGETS[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

printf '%-24s %12s %8s %8s %8s %10s\n' target executions paths crashes hangs exec/s
for t in "${TARGETS[@]}"; do
  stats="$OUT/$t/default/fuzzer_stats"
  if [ ! -f "$stats" ]; then
    printf '%-24s %s\n' "$t" "no stats (see $OUT/$t.log)"
    continue
  fi
  get() { awk -F': *' -v k="$1" '$1 ~ "^"k" *$" {print $2}' "$stats"; }
  printf '%-24s %12s %8s %8s %8s %10s\n' "$t" "$(get execs_done)" "$(get corpus_count)" \
    "$(get saved_crashes)" "$(get saved_hangs)" "$(get execs_per_sec)"
done
