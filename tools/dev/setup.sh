#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for colo and builds it into ./build.
# Run as root (or with sudo). Idempotent: re-running only rebuilds.
#
#   tools/dev/setup.sh            # install packages, configure, build
#   COLO_BUILD_DIR=b tools/dev/setup.sh -Dbuildtype=debug   # extra meson options
#   COLO_PLOTS=1 tools/dev/setup.sh   # also matplotlib, for tools/bench/plot.py
set -euo pipefail
cd "$(dirname "$0")/../.."

# Debian packages, each for one reason (README.md, "Dependencies", says more).
packages=(
  g++ meson ninja-build pkg-config   # C++20 compiler and the build
  libboost-dev                       # Boost.Interprocess (mapping) and Boost.Lockfree
  libgtest-dev libgmock-dev          # the test suites
  libxxhash-dev                      # xxHash (XXH3): lock table keys, hashed inline
  libcli11-dev                       # colo's command line
  nlohmann-json3-dev                 # colo's --json output
  libzmq3-dev cppzmq-dev             # ZeroMQ: the bridge (colod), colod's control socket, the baselines of colo-bench
  capnproto libcapnp-dev             # Cap'n Proto: schemas/ compiled at build time, colod's frames
  libtomlplusplus-dev                # colod's TOML config
  libcpp-httplib-dev                 # colod's client of etcd's HTTP/JSON gateway
  libhiredis-dev                     # colod's Redis lock backend
  libzookeeper-mt-dev                # colod's ZooKeeper lock backend (the C client, threaded)
  librdkafka-dev                     # colod's Kafka links (librdkafka's C API)
  liburing-dev                       # colod's event loop sleeps on its sockets and the rings' futexes at once (io_uring)
  librabbitmq-dev libssl-dev         # colod's RabbitMQ links (rabbitmq-c, AMQP 0-9-1; OpenSSL for TLS and the system's CAs)
  clang libclang-rt-14-dev           # the fuzz targets (tests/fuzz/): libFuzzer, and the coverage it steers by, come with clang only (its runtime is a separate package)
  help2man                           # the man pages colo(1), colod(8) ... made from the programs' --help
  util-linux procps                  # setpriv, ps: used by tests
  iproute2                           # ip: network namespaces and a veth pair for the bridge-netns test
  python3-dev pybind11-dev           # the Python module colo (broker/python/)
  python3-pytest python3-venv        # its tests: pytest, and `pip install .` into a fresh venv
  python3-zmq python3-redis          # the baselines of `colo bench python` (pyzmq, redis-py)
)
# Only to redraw the plots of docs/benchmarks.md: large (numpy, scipy), and
# neither the build nor the tests need it.
if [ "${COLO_PLOTS:-0}" = 1 ]; then
  packages+=(python3-matplotlib)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

build="${COLO_BUILD_DIR:-build}"
if [ -f "$build/build.ninja" ]; then
  meson setup --reconfigure "$build" "$@" >/dev/null
else
  meson setup "$build" "$@" >/dev/null
fi
# Two cores: never more than two compile jobs.
ninja -C "$build" -j 2
echo "setup: built into $build/ (colo: $build/tools/colo)"
