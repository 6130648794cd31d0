#!/usr/bin/env bash
# Builds loopfleet. `scripts/build.sh` -> build/bin/; `scripts/build.sh asan` -> build-asan/bin/
# (AddressSanitizer + UndefinedBehaviorSanitizer). Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:-release}
case "$kind" in
  release) dir=build; extra=() ;;
  asan) dir=build-asan; extra=(-DLOOPFLEET_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug) ;;
  *) echo "build.sh: unknown build kind '$kind' (use release or asan)" >&2; exit 2 ;;
esac

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
if [[ ! -f "$dir/CMakeCache.txt" ]]; then
  cmake -S . -B "$dir" "${generator[@]}" -DLOOPFLEET_WERROR=ON "${extra[@]}" >/dev/null
fi
# Two cores: two compile jobs; Beast lives in one file, so memory stays modest.
cmake --build "$dir" -j2
