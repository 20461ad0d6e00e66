#!/usr/bin/env bash
# tests/fuzz/run.sh — builds the libFuzzer targets of tests/fuzz/ with clang
# under AddressSanitizer + UBSan in build-fuzz/ (only the targets and what
# they link: libcolo, colod's library, the schemas) and runs each for a
# bounded time. Exits non-zero if any target crashed, hung or leaked.
#
#   tests/fuzz/run.sh                          every target, 15 s each (what CI runs)
#   tests/fuzz/run.sh ring frames              these targets only
#   COLO_FUZZ_SECONDS=1800 tests/fuzz/run.sh ring    longer (docs/testing.md)
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

failed=()
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target" artifacts="$build/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz: $target for ${seconds} s"
  # -timeout: an input that runs for 10 s is a hang (reported, and kept).
  if ! ASAN_OPTIONS=abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
      "$build/tests/fuzz/colo-fuzz-$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "tests/fuzz/corpus/$target" \
      >"$build/fuzz-$target.log" 2>&1; then
    failed+=("$target")
    tail -n 60 "$build/fuzz-$target.log" >&2
  fi
  grep -E "^stat::number_of_executed_units|^Done [0-9]+ runs" "$build/fuzz-$target.log" | tail -n 1 || true
done
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} of ${#targets[@]} target(s) failed: ${failed[*]} (logs: $build/fuzz-<target>.log, inputs: $build/fuzz-artifacts/)" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), no crash"
