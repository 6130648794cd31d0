#!/usr/bin/env bash
# Fresh machine to a running demo: installs dependencies, builds, and runs the hello example
# under the supervisor on 127.0.0.1:8080, one worker per CPU, in the foreground
# (Ctrl-C drains and stops it; `build/bin/loopfleet status` from another terminal).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo "demo: try  curl http://127.0.0.1:8080/  and  build/bin/loopfleet status"
exec build/bin/loopfleet run --workers auto --listen 127.0.0.1:8080 -- build/bin/hello
