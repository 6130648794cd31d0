#!/usr/bin/env bash
# Installs the Debian 12 packages loopfleet needs to build, test and benchmark.
# Idempotent: when everything is present it says so and changes nothing.
set -euo pipefail

packages=(
  # build
  g++ cmake ninja-build ccache pkg-config
  libboost1.81-dev libboost-json1.81-dev
  libtomlplusplus-dev libnats-dev
  # the cluster layer's server, and the front (load balancer across nodes)
  nats-server haproxy keepalived
  # tests (setpriv from util-linux runs test_user.py's unprivileged supervisors; curl asks
  # the cluster tests' workers; python3-seccomp refuses io_uring in test_http_io.py, as
  # Docker does), and the Node example
  libgtest-dev python3 python3-pytest util-linux curl nodejs python3-seccomp
  # two integration tests at a time (scripts/test.sh): most of their time is waiting
  python3-pytest-xdist
  # systemd-socket-activate: test_supervisor_crash.py starts a supervisor under it
  systemd
  # the front's TLS test makes its certificate with openssl req -x509
  openssl
  # fuzzing (scripts/fuzz.sh): clang 14 and its libFuzzer and sanitizer runtimes
  clang libclang-rt-14-dev
  # load and peers for bench/ and the load tests
  wrk nginx-light gunicorn python3-aiohttp python3-uvloop
  # bench/http_hello.py --syscalls counts system calls with perf's tracepoints; heaptrack is
  # how docs/benchmarks.md found where an idle connection's bytes go
  linux-perf heaptrack
  # the HTTP server's io_uring connections (src/http/uring_set.cpp), and the io_uring floor
  # server bench/http_floor.py compiles
  liburing-dev
  python3-celery python3-redis redis-server
  # the Python launchers' frameworks (python/loopfleet), tested in test_python.py
  python3-uvicorn python3-fastapi python3-httptools
  # the cluster from Python: a pybind11 extension over the C++ cluster client
  pybind11-dev python3-dev
  # the admin endpoint's tests: a real Prometheus scrapes /metrics, a headless Chromium
  # (driven over CDP with python3-websocket) renders the status page
  prometheus chromium python3-websocket
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
