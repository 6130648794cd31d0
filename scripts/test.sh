#!/usr/bin/env bash
# Installs dependencies, builds, and runs every test: unit tests (GoogleTest via ctest) and
# integration tests (pytest, real processes and sockets), first on the normal build, then
# again on an ASan+UBSan build; then 10 s of each libFuzzer harness (scripts/fuzz.sh).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh

# Debian's python3, where python3-pytest is installed (a python3 earlier on PATH may lack it).
py=/usr/bin/python3

run_suite() {  # $1: build kind, $2: bin dir, then pytest's own arguments
  local kind=$1 bin=$2
  shift 2
  echo "=== $kind: build"
  scripts/build.sh "$kind"
  echo "=== $kind: unit tests"
  ctest --test-dir "$(dirname "$bin")" --output-on-failure -j2
  echo "=== $kind: integration tests"
  # Two test files at a time (pytest-xdist), each file's tests in order on one process: most of
  # a test's time is waiting (for a node to die, a schedule to fire): the release suite took 7
  # minutes instead of 13. Every test passes beside another, as it must on a loaded machine.
  LOOPFLEET_BIN="$PWD/$bin" "$py" -m pytest -q -p no:cacheprovider --durations=15 -n 2 --dist loadfile "$@" \
    tests/integration
}

run_suite release build/bin
# The soaks (chaos, five cluster kills on a busy machine) drive nothing the other tests do not:
# on the sanitizer build they would only repeat it, three times slower.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 run_suite asan build-asan/bin -m "not soak"
# A short fuzz run of every harness from its corpus: it mostly replays the corpus, the crashes
# fixed before among them, and explores a little. Long runs: scripts/fuzz.sh 600 (docs/fuzzing.md).
echo "=== fuzz: ${LOOPFLEET_FUZZ_SECONDS:-10} s per harness"
scripts/fuzz.sh "${LOOPFLEET_FUZZ_SECONDS:-10}"
echo "=== all tests passed"
