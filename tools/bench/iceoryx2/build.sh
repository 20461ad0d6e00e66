#!/bin/sh
# Builds the iceoryx2 transport of `colo bench queue|topic` (not part of the
# default build or CI: it needs cargo and crates.io). Then:
#   COLO_BENCH_ICEORYX2=<path printed below> build/tools/colo bench topic \
#       --transports colo-topic,iceoryx2,zmq-ipc-pushpull,floor-spsc,unix-stream --patterns 1-1
set -eu
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
cargo build --release --manifest-path "$here/Cargo.toml" --target-dir "$target" -j "${JOBS:-2}"
echo "$target/release/libcolo_bench_iceoryx2.so"
