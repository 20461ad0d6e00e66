#!/usr/bin/env bash
# Smoke test of tests/services/: starts ZooKeeper, etcd and Redis
# (services.sh), and for each backend, all three at once:
#   1. two hold_lock.py holders (--hold 3) race for the same lock; both get it
#      in turn and their holding intervals do not overlap;
#   2. while the first holds it, `--try-acquire 1` prints `busy` (exit 3);
#   3. while the first holds it and the second waits, what the server holds
#      is the recipe that README.md describes (the znodes, the key and its
#      token and TTL, the etcd keys and their leases);
#   4. afterwards the lock is free: `--try-acquire 1` gets it at once.
# Then stops the services it started (one that was already up stays up).
# Prints one line per backend and "services check: N passed, N failed";
# exits non-zero on any failure. About 8 s once the packages are installed
# (tests/services/install.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
services="$here/services.sh"
hold_lock="$here/interop/hold_lock.py"
eval "$("$services" env all)"

work="$(mktemp -d -t colo-services-check.XXXXXX)"
started=()
finish() {
  local rc=$?
  if ((${#started[@]})); then
    for svc in "${started[@]}"; do "$services" stop "$svc" >/dev/null || rc=1; done
  fi
  rm -rf "$work"
  exit $rc
}
trap finish EXIT

for svc in zookeeper etcd redis; do
  "$services" status "$svc" >/dev/null 2>&1 || started+=("$svc")
done
"$services" start all

# Runs hold_lock.py --verbose in the background: stdout to FILE, stderr
# (with the "acquired at NS" and "releasing at NS" time stamps) to FILE.err,
# the exit status to FILE.rc. SIGTERM after 20 s (a waiter that never gets
# the lock then gives up, exit 1), so that the check always ends.
holder() {
  local file="$1"
  shift
  { timeout 20 "$hold_lock" --verbose "$@" >"$file" 2>"$file.err"; echo $? >"$file.rc"; } &
}

# The time stamp (CLOCK_MONOTONIC ns) that holder FILE wrote for WORD.
time_of() { sed -n "s/^hold_lock: $2 at \([0-9]*\) ns\$/\1/p" "$1.err" | head -n 1; }

# What the server holds for lock NAME while one client holds it and another
# waits (step 3). Prints what it saw; returns 1 if it is not the recipe.
inspect() {
  local backend="$1" name="$2"
  case $backend in
    zookeeper)
      /usr/bin/python3 - "$COLO_ZOOKEEPER" "/colo/locks/$name" <<'PY'
import re, sys
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1])
zk.start(timeout=10)
path = sys.argv[2]
children = sorted(zk.get_children(path), key=lambda c: c[-10:])
ok = len(children) == 2
for child in children:
    data, stat = zk.get(f"{path}/{child}")
    print(f"{path}/{child} data={data.decode()!r} ephemeralOwner=0x{stat.ephemeralOwner:x}")
    ok &= bool(re.fullmatch(r"[0-9a-f]{32}__lock__\d{10}", child)) and stat.ephemeralOwner != 0
zk.stop()
sys.exit(0 if ok else 1)
PY
      ;;
    redis)
      local key="colo:lock:$name" host="${COLO_REDIS%:*}" port="${COLO_REDIS##*:}" token pttl
      token="$(redis-cli -h "$host" -p "$port" get "$key")"
      pttl="$(redis-cli -h "$host" -p "$port" pttl "$key")"
      echo "$key = $token (PTTL $pttl ms)"
      [[ "$token" =~ ^[0-9a-f]{32}$ ]] && ((pttl > 0 && pttl <= 10000))
      ;;
    etcd)
      local prefix="colo/locks/$name/" keys=0 key lease
      while read -r key lease; do
        echo "$key lease=$lease"
        [ "$key" = "$prefix$lease" ] || return 1
        keys=$((keys + 1))
      done < <(etcdctl --endpoints="$COLO_ETCD" get --prefix "$prefix" -w json | /usr/bin/python3 -c '
import base64, json, sys
for kv in sorted(json.load(sys.stdin).get("kvs", []), key=lambda kv: kv["create_revision"]):
    print(base64.b64decode(kv["key"]).decode(), format(kv["lease"], "x"))')
      ((keys == 2))
      ;;
  esac
}

# Steps 1-4 for one backend; prints what went wrong, returns 1 on failure.
check_backend() {
  local backend="$1" dir="$work/$1" name="check-$$-$1"
  mkdir -p "$dir"
  local problems=()
  holder "$dir/a" --backend "$backend" --name "$name" --hold 3
  local pa=$!
  holder "$dir/b" --backend "$backend" --name "$name" --hold 3
  local pb=$!

  # 2. whoever got it first, a third client finds it busy.
  local first="" tries=0
  while [ -z "$first" ] && ((tries++ < 150)); do
    for f in a b; do
      if [ -z "$first" ] && [ -f "$dir/$f" ] && grep -qx acquired "$dir/$f"; then first=$f; fi
    done
    [ -n "$first" ] || sleep 0.1
  done
  if [ -z "$first" ]; then
    problems+=("neither holder acquired the lock within 15 s")
  else
    local out rc=0
    out="$("$hold_lock" --backend "$backend" --name "$name" --try-acquire 1 2>"$dir/try.err")" || rc=$?
    [ "$out" = busy ] && [ $rc -eq 3 ] ||
      problems+=("--try-acquire 1 while held: printed '$out', exit $rc, want 'busy', exit 3")
    # 3. the recipe on the server.
    if ! inspect "$backend" "$name" >"$dir/inspect" 2>&1; then
      problems+=("the server does not hold the documented recipe:")
      problems+=("$(cat "$dir/inspect")")
    fi
  fi
  wait $pa $pb || true

  # 1. both held it, one after the other.
  local f t_acq=() t_rel=()
  for f in a b; do
    local got
    got="$(tr '\n' ' ' <"$dir/$f")"
    if [ "$got" != "acquired released " ] || [ "$(cat "$dir/$f.rc")" != 0 ]; then
      problems+=("holder $f printed '${got% }', exit $(cat "$dir/$f.rc"), want 'acquired released', exit 0; stderr: $(cat "$dir/$f.err")")
      continue
    fi
    t_acq+=("$(time_of "$dir/$f" acquired)")
    t_rel+=("$(time_of "$dir/$f" releasing)")
  done
  if ((${#t_acq[@]} == 2)); then
    # Not overlapping: one was releasing before the other acquired.
    if ! ((t_rel[0] <= t_acq[1] || t_rel[1] <= t_acq[0])); then
      problems+=("the two holders held the lock at the same time: a ${t_acq[0]}..${t_rel[0]}, b ${t_acq[1]}..${t_rel[1]} (ns)")
    fi
  fi

  # 4. free again.
  local out rc=0
  out="$("$hold_lock" --backend "$backend" --name "$name" --try-acquire 1 2>"$dir/free.err" | tr '\n' ' ')" || rc=$?
  [ "$out" = "acquired released " ] && [ $rc -eq 0 ] ||
    problems+=("--try-acquire 1 after both released: printed '$out', exit $rc, want 'acquired released', exit 0")

  if ((${#problems[@]})); then
    echo "$backend: FAILED"
    printf '  %s\n' "${problems[@]}"
    return 1
  fi
  local gap=$(((t_acq[0] > t_acq[1] ? t_acq[0] - t_rel[1] : t_acq[1] - t_rel[0]) / 1000000))
  echo "$backend: mutual exclusion ok (second holder acquired ${gap} ms after the first began releasing; busy while held; lock free after)"
  sed 's/^/  /' "$dir/inspect"
}

pids=()
for backend in zookeeper etcd redis; do
  check_backend "$backend" >"$work/$backend.report" 2>&1 &
  pids+=($!)
done
passed=0 failed=0
i=0
for backend in zookeeper etcd redis; do
  if wait "${pids[$i]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  cat "$work/$backend.report"
  i=$((i + 1))
done
echo "services check: $passed passed, $failed failed"
((failed == 0))
