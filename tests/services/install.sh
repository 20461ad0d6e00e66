#!/usr/bin/env bash
# Installs the Debian packages that tests/services/ needs: ZooKeeper, etcd and
# Redis servers (started by services.sh, never as system services) and the
# clients that the interop scripts use. Run as root (or with sudo).
# Idempotent and quiet: installs only what is missing, prints one line.
#
#   tests/services/install.sh
#
# Debian's packages start system services from their postinst (redis-server
# and etcd-server through invoke-rc.d / deb-systemd-invoke, each on its
# default port: 6379, 2379). Our own instances listen on other ports, but a
# test machine should run only what its tests start, so:
#   - while apt-get runs, a policy-rc.d that denies every start is in place
#     (unless the machine already has one: Docker-style images ship one that
#     denies everything, and a hand-written one is not ours to replace);
#   - afterwards, for the service packages installed by this run only, the
#     system service is stopped and disabled (a developer's own Redis that was
#     installed before is left alone).
# `zookeeper` has no service (that is `zookeeperd`, which we do not install):
# its postinst only adds a user and the /etc/zookeeper/conf alternative.
set -euo pipefail

# Debian packages, each for one reason.
packages=(
  zookeeper                     # ZooKeeper server jars (/usr/share/java/zookeeper.jar) and zkCli.sh; depends on default-jre
  default-jre-headless          # the JVM that runs it (zookeeper pulls it in through default-jre; named so that `java` is sure)
  etcd-server etcd-client       # etcd and etcdctl (3.4)
  redis-server redis-tools      # redis-server and redis-cli (7.0)
  python3-kazoo python3-redis   # the ZooKeeper and Redis clients of interop/hold_lock.py
)
# Packages whose postinst starts a system service, and that service's name.
declare -A system_service=([redis-server]=redis-server [etcd-server]=etcd)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "services/install: all ${#packages[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
log="$(mktemp -t colo-services-install.XXXXXX)"
policy=/usr/sbin/policy-rc.d
own_policy=0
cleanup() {
  if ((own_policy)); then $SUDO rm -f "$policy"; fi
}
trap cleanup EXIT
if [ ! -e "$policy" ]; then
  # 101: "action forbidden by policy" (invoke-rc.d(8)); deb-systemd-invoke
  # honours it too.
  printf '#!/bin/sh\n# colo tests/services/install.sh: no service starts while it installs\nexit 101\n' |
    $SUDO tee "$policy" >/dev/null
  $SUDO chmod 755 "$policy"
  own_policy=1
fi

echo "services/install: installing ${missing[*]}"
start=$SECONDS
if ! { $SUDO apt-get update -qq &&
       DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
         -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "services/install: apt-get failed (whole log: $log)" >&2
  exit 1
fi

# Stop and disable the system services of the packages installed just now.
for p in "${missing[@]}"; do
  svc="${system_service[$p]:-}"
  [ -n "$svc" ] || continue
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now "$svc" >>"$log" 2>&1 || true
  else
    $SUDO update-rc.d "$svc" disable >>"$log" 2>&1 || true
    # Only if a start got through a policy-rc.d that was not ours.
    if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >>"$log" 2>&1 || true; fi
  fi
done

command -v java >/dev/null || { echo "services/install: no java after installing (log: $log)" >&2; exit 1; }
rm -f "$log"
echo "services/install: done in $((SECONDS - start)) s"
