#!/usr/bin/env bash
# Fresh machine to a running demo: installs dependencies, builds, and serves the hello
# example on 127.0.0.1:8080 in the foreground (Ctrl-C drains and stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
echo "demo: try  curl http://127.0.0.1:8080/  and  curl http://127.0.0.1:8080/json"
exec build/bin/hello --listen 127.0.0.1:8080
