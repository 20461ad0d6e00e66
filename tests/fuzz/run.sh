#!/usr/bin/env bash
# tests/fuzz/run.sh — builds the libFuzzer targets of tests/fuzz/ with clang
# under AddressSanitizer + UBSan in build-fuzz/ (only the targets and what
# they link: libcolo, colod's library, the schemas) and runs each for a
# bounded time. Exits non-zero if any target crashed, hung or leaked.
#
#   tests/fuzz/run.sh                          every target, 15 s each (what CI runs)
#   tests/fuzz/run.sh ring frames              these targets only
#   COLO_FUZZ_SECONDS=1800 tests/fuzz/run.sh ring    longer (docs/testing.md)
#   COLO_FUZZ_BUILD_ONLY=1 tests/fuzz/run.sh          build the targets, run nothing
#
# The seeds in tests/fuzz/corpus/<target>/ are read, never written: new
# inputs go to build-fuzz/fuzz-corpus/<target>/, and a crash to
# build-fuzz/fuzz-artifacts/<target>/crash-<sha1> (keep it as a regression
# input: copy it into the seeds' directory, fix the code, replay it).
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${COLO_FUZZ_SECONDS:-15}"
build="${COLO_FUZZ_BUILD_DIR:-build-fuzz}"
all=(frames control config segment registry ring)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")

options=(-Dfuzz=enabled -Db_sanitize=address,undefined -Dbuildtype=debug -Db_lundef=false -Dpython=disabled)
if [ -f "$build/build.ninja" ]; then
  meson setup --reconfigure "$build" "${options[@]}" >/dev/null
else
  CC="${COLO_FUZZ_CC:-clang}" CXX="${COLO_FUZZ_CXX:-clang++}" meson setup "$build" "${options[@]}" >/dev/null
fi
# Two cores: never more than two compile jobs.
ninja -C "$build" -j 2 "${targets[@]/#/tests/fuzz/colo-fuzz-}"
[ "${COLO_FUZZ_BUILD_ONLY:-0}" = 1 ] && exit 0

# One target for `seconds` on one core; its result in $build/fuzz-<target>.status.
fuzz_one() {
  local target=$1 corpus="$build/fuzz-corpus/$1" artifacts="$build/fuzz-artifacts/$1" status=0
  rm -f "$build/fuzz-$target.status"  # none from an earlier run: a fuzzer that died early counts as failed
  mkdir -p "$corpus" "$artifacts"
  # -timeout: an input that runs for 10 s is a hang (reported, and kept).
  ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$build/tests/fuzz/colo-fuzz-$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "tests/fuzz/corpus/$target" \
    >"$build/fuzz-$target.log" 2>&1 || status=$?
  echo "$status" >"$build/fuzz-$target.status"
}

# Two targets at a time (each fuzzer is one process on one core; the machine
# has two), each for the whole `seconds`: the same fuzzing in half the time.
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pair=("${targets[@]:i:2}")
  echo "fuzz: ${pair[*]} for ${seconds} s"
  for target in "${pair[@]}"; do fuzz_one "$target" & done
  wait
done
failed=()
for target in "${targets[@]}"; do
  if [ "$(cat "$build/fuzz-$target.status" 2>/dev/null)" != 0 ]; then
    failed+=("$target")
    tail -n 60 "$build/fuzz-$target.log" >&2
  fi
  echo -n "fuzz: $target: "
  grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "$build/fuzz-$target.log" | tail -n 1 || echo
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} target(s) failed: ${failed[*]} (logs: $build/fuzz-<target>.log, inputs: $build/fuzz-artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), no crash"
