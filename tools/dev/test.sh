#!/usr/bin/env bash
# Sets up (as tools/dev/setup.sh) and runs the whole colo test suite:
#   1. release build: suites unit, multiproc, stress, chaos (a short seeded run of
#      kill -9 and SIGSTOP with checkers), bridge (colod processes on
#      loopback, and in two network namespaces joined by a veth pair),
#      install (meson install into a DESTDIR, programs built against it only;
#      `pip install .` into a fresh venv), python (the Python module under
#      pytest, with C++ peers), services (cluster-scope locks against real
#      ZooKeeper, etcd and Redis servers), kafka (colod's Kafka links
#      against a real Kafka 4 broker) and rabbitmq (colod's RabbitMQ links
#      against a real RabbitMQ 3.10 node): the servers installed
#      (tests/services/install.sh) and started on loopback by
#      tests/services/services.sh, stopped at the end (those this script
#      started; a developer's running ones stay up)
#   2. AddressSanitizer + UBSan build: suites unit, multiproc, bridge (colod too)
#   3. ThreadSanitizer build: suite tsan (the ring with threads)
#   4. fuzzing: each libFuzzer target of tests/fuzz/ for 15 s under ASan+UBSan
#      (clang, build-fuzz/: only the targets and what they link), two at a time
#   The builds of 2-4 run in the background, niced, while the server suites of
#   1 run (build/meson-logs/sanitizer-builds.log).
# Prints one closing line "colo: N passed, N failed, N skipped" and exits
# non-zero if anything failed. Run as root: some tests switch to `nobody`.
set -euo pipefail
cd "$(dirname "$0")/../.."

summarise() {  # counts results in meson's JSON test logs
  python3 - "$@" <<'PY'
import json, sys
passed = failed = skipped = 0
for path in sys.argv[1:]:
    for line in open(path):
        test = json.loads(line)
        r = test["result"]
        if r in ("OK", "EXPECTEDFAIL"): passed += 1
        elif r == "SKIP": skipped += 1
        else:
            failed += 1
            # Named here too: CI often keeps only the tail of the output.
            print(f"colo: FAILED {test['name']} ({r}, {test['duration']:.1f} s, {path}); its output's end:")
            for out in (test.get("stdout") or "").splitlines()[-40:]:
                print(f"  | {out}")
print(f"colo: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
PY
}

status=0
# -Dpython=enabled: the python suite must not pass by having nothing to test.
tools/dev/setup.sh -Dpython=enabled
meson test -C build --num-processes 2 --print-errorlogs --suite unit --suite multiproc --suite stress --suite bridge \
  --suite install --suite python --suite chaos || status=1

# The services, kafka and rabbitmq suites: their servers, then their tests
# (one at a time: some stop and restart a server). COLO_REQUIRE_SERVICES=1: a
# test whose server is missing fails instead of skipping.
services=tests/services/services.sh
rm -f build/meson-logs/serviceslog.json  # counted at the end only if it ran this time
tests/services/install.sh
all_services=(zookeeper etcd redis kafka rabbitmq)
started_services=()
for svc in "${all_services[@]}"; do
  "$services" status "$svc" >/dev/null 2>&1 || started_services+=("$svc")
done
stop_services() {
  for svc in "${started_services[@]}"; do "$services" stop "$svc" >/dev/null 2>&1 || true; done
}
trap stop_services EXIT
# What services.sh start printed, kept for the end of the run: CI keeps the
# tail of the output, and a server that did not start must be named there.
services_log=build/meson-logs/services-start.log
: >"$services_log"
start_services() {  # 120 s per server: the JVMs and the Erlang VM start together on 2 cores
  COLO_SERVICES_TIMEOUT="${COLO_SERVICES_TIMEOUT:-120}" "$services" start all 2>&1 | tee -a "$services_log"
}
# One retry: a server that did not answer in time (a slow or busy machine)
# is stopped and started again; the ones that are up stay up.
retry_services() {
  echo "colo: retrying the servers that did not start" | tee -a "$services_log"
  for svc in "${started_services[@]}"; do
    "$services" status "$svc" >/dev/null 2>&1 || "$services" stop "$svc" >>"$services_log" 2>&1 || true
  done
  start_services
}
# The sanitizer builds of steps 2-4 (AddressSanitizer, ThreadSanitizer, the
# fuzz targets) compile in the background while the server suites run, at
# nice 19: those tests mostly wait on their servers, and the builds get only
# the CPU they leave (a nice-19 task weighs 1/68 of a nice-0 one), so the
# tests' bounded waits see the machine as before. Of the ASan build's six
# minutes, about five are hidden; the run waits for the rest after the
# server suites.
sanitizer_builds_log=build/meson-logs/sanitizer-builds.log
(
  set -e
  COLO_BUILD_DIR=build-asan nice -n 19 tools/dev/setup.sh -Db_sanitize=address,undefined -Dbuildtype=debug -Db_lundef=false
  if [ -f build-tsan/build.ninja ]; then meson setup --reconfigure build-tsan -Db_sanitize=thread -Dbuildtype=debugoptimized >/dev/null
  else meson setup build-tsan -Db_sanitize=thread -Dbuildtype=debugoptimized >/dev/null; fi
  nice -n 19 ninja -C build-tsan -j 2 tests/channel/colo-test-ring-threads
  COLO_FUZZ_BUILD_ONLY=1 nice -n 19 tests/fuzz/run.sh
) >"$sanitizer_builds_log" 2>&1 &
sanitizer_builds_pid=$!

services_up=1
if start_services || retry_services; then
  eval "$("$services" env all)"
  # Its own log name: a second `meson test` in build/ would overwrite testlog.json.
  COLO_REQUIRE_SERVICES=1 meson test -C build --no-rebuild --num-processes 1 --print-errorlogs --logbase serviceslog \
    --suite services --suite kafka --suite rabbitmq || status=1
else
  services_up=0
  status=1
  # Which ones, while they are still as they failed (stop_services follows).
  failed_services=()
  for svc in "${all_services[@]}"; do
    "$services" status "$svc" >/dev/null 2>&1 || failed_services+=("$svc")
  done
fi
stop_services
trap - EXIT

if ! wait "$sanitizer_builds_pid"; then
  echo "colo: FAILED: the sanitizer builds (AddressSanitizer, ThreadSanitizer, fuzz targets); the end of $sanitizer_builds_log:"
  tail -n 40 "$sanitizer_builds_log" | sed 's/^/  | /'
  status=1
fi
# Built above; `meson test` checks that the build is up to date (a failed build fails here too).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  meson test -C build-asan --num-processes 2 --print-errorlogs --suite unit --suite multiproc --suite bridge || status=1

# 3. ThreadSanitizer: the ring's threaded test only (the rest is processes,
#    which TSan does not follow); built above.
ninja -C build-tsan -j 2 tests/channel/colo-test-ring-threads
TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan --no-rebuild --num-processes 1 --print-errorlogs --suite tsan || status=1

# 4. Fuzzing (tests/fuzz/run.sh): a crash, a hang or a leak fails the run.
tests/fuzz/run.sh || status=1

logs=(build/meson-logs/testlog.json build-asan/meson-logs/testlog.json build-tsan/meson-logs/testlog.json)
# The services suite's log, if it ran (its servers may have failed to start).
[ -f build/meson-logs/serviceslog.json ] && logs+=(build/meson-logs/serviceslog.json)
if ((services_up == 0)); then
  # Last, next to the closing line: the suites that did not run, and why.
  echo "colo: FAILED: the services, kafka and rabbitmq suites did not run: their servers did not start"
  sed 's/^/  | /' "$services_log"
  for svc in "${failed_services[@]}"; do
    dir="${COLO_SERVICES_DIR:-/tmp/colo-services}/$svc"
    # RabbitMQ's own log is not its stdout.
    for log in "$dir/$svc.log" "$dir/data/log/colo-test@localhost.log"; do
      [ -f "$log" ] || continue
      echo "  $svc: $log, its end:"
      tail -n 25 "$log" | sed 's/^/  | /'
    done
  done
fi
summarise "${logs[@]}" || status=1
exit $status
