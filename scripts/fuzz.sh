#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tests/fuzz/*_fuzz.cpp) with clang, ASan and UBSan into
# build-fuzz/, then runs each for SECONDS (default 60) from its committed seed corpus
# (tests/fuzz/corpus/NAME) plus what earlier runs found (build-fuzz/corpus/NAME).
#   scripts/fuzz.sh            60 s per harness
#   scripts/fuzz.sh 600        a long run
#   scripts/fuzz.sh 15 http    one harness
# Prints executions and time per harness; exits non-zero if any harness crashed, leaked,
# hung (-timeout) or ran out of memory (-rss_limit_mb). A crashing input is saved as
# build-fuzz/crashes/NAME-crash-*: fix the bug, then add the input to tests/fuzz/corpus/NAME.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(http control notify config heartbeat)
dir=build-fuzz

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$dir" "${generator[@]}" -DCMAKE_CXX_COMPILER=clang++ -DLOOPFLEET_FUZZ=ON -DLOOPFLEET_TESTS=OFF \
    -DLOOPFLEET_WERROR=ON >/dev/null
fi
started=$SECONDS
cmake --build "$dir" -j2 --target fuzzers
echo "fuzz: build took $((SECONDS - started)) s"

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
mkdir -p "$dir/crashes"
failed=()
for name in "${names[@]}"; do
  work="$dir/corpus/$name"
  log="$dir/$name.log"
  mkdir -p "$work"
  started=$SECONDS
  # New inputs go to the first directory (the working corpus), never into the committed seeds.
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: 2 GiB is a leak or a blow-up.
  rc=0
  "$dir/bin/${name}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/crashes/$name-" "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  units=$(find "$work" -type f | wc -l)
  if [[ $rc -ne 0 ]]; then
    failed+=("$name")
    echo "fuzz: $name FAILED (exit $rc) after $((SECONDS - started)) s, ${runs:-?} executions; log $log:"
    grep -E 'ERROR|runtime error|property failed|Test unit written|SUMMARY' "$log" | head -20 || true
  else
    echo "fuzz: $name ok: ${runs:-?} executions in $((SECONDS - started)) s (${rate:-?}/s), working corpus $units inputs"
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz: failed: ${failed[*]} (inputs in $dir/crashes/)"
  exit 1
fi
echo "fuzz: all ${#names[@]} harnesses ran ${seconds} s each without a crash"
