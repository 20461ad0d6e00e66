#!/usr/bin/env bash
# Installs what tests/services/ needs: the Debian packages of the ZooKeeper,
# etcd and Redis servers (started by services.sh, never as system services)
# and of the clients the interop scripts use; and Apache Kafka's jars, which
# Debian does not package, fetched with Maven from Maven Central into a cache
# ($COLO_KAFKA_HOME, default ~/.cache/colo/kafka-<version>). Run as root (or
# with sudo) for the packages. Idempotent and quiet: installs only what is
# missing, prints a line for each part.
#
#   tests/services/install.sh
#
# Debian's packages start system services from their postinst (redis-server,
# etcd-server and rabbitmq-server through invoke-rc.d / deb-systemd-invoke,
# each on its default port: 6379, 2379, 5672). Our own instances listen on other ports, but a
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
  maven                         # fetches Kafka's jars from Maven Central (below)
  kcat python3-confluent-kafka  # Kafka clients: services.sh's readiness check, the Kafka tests' interop
  rabbitmq-server               # RabbitMQ 3.10 (Erlang) for the rabbitmq suite; run from /usr/lib/rabbitmq/bin
  python3-pika                  # the RabbitMQ tests' interop client
)
# Packages whose postinst starts system services, and those services' names
# (RabbitMQ's Erlang brings epmd, socket-activated).
declare -A system_service=([redis-server]=redis-server [etcd-server]=etcd
                           [rabbitmq-server]="rabbitmq-server epmd.socket epmd")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Apache Kafka (broker and controller) and the log4j binding of its slf4j
# 1.x API (without it the broker logs nothing): versions as services.sh runs
# them. A pom that only lists them; Maven copies them and their runtime
# dependencies (45 jars, 43 MB) into lib/.
kafka_version=4.4.0
log4j_binding_version=2.25.5
kafka_home="${COLO_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/colo/kafka-$kafka_version}"
fetch_kafka() {
  if compgen -G "$kafka_home/lib/kafka_2.13-$kafka_version.jar" >/dev/null; then
    echo "services/install: Kafka $kafka_version present in $kafka_home"
    return 0
  fi
  local start=$SECONDS log
  log="$(mktemp -t colo-kafka-fetch.XXXXXX)"
  mkdir -p "$kafka_home"
  cat >"$kafka_home/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by colo's tests/services/install.sh: the jars of a Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>colo.tests</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$kafka_version</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>$log4j_binding_version</version>
    </dependency>
  </dependencies>
</project>
EOF
  # Into lib.partial first: an interrupted fetch leaves no half-filled lib/.
  rm -rf "$kafka_home/lib.partial"
  if ! (cd "$kafka_home" && mvn -B -q dependency:copy-dependencies -DoutputDirectory=lib.partial \
          -DincludeScope=runtime) >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "services/install: fetching Kafka's jars with Maven failed (whole log: $log)" >&2
    return 1
  fi
  rm -rf "$kafka_home/lib"
  mv "$kafka_home/lib.partial" "$kafka_home/lib"
  rm -f "$log"
  echo "services/install: Kafka $kafka_version fetched into $kafka_home in $((SECONDS - start)) s"
}

if ((${#missing[@]} == 0)); then
  echo "services/install: all ${#packages[@]} packages present"
  fetch_kafka
  exit
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
  for svc in ${system_service[$p]:-}; do
    if [ -d /run/systemd/system ]; then
      $SUDO systemctl disable --now "$svc" >>"$log" 2>&1 || true
    else
      $SUDO update-rc.d "$svc" disable >>"$log" 2>&1 || true
      # Only if a start got through a policy-rc.d that was not ours.
      if [ -x "/etc/init.d/$svc" ]; then $SUDO "/etc/init.d/$svc" stop >>"$log" 2>&1 || true; fi
    fi
  done
done

command -v java >/dev/null || { echo "services/install: no java after installing (log: $log)" >&2; exit 1; }
rm -f "$log"
echo "services/install: done in $((SECONDS - start)) s"
fetch_kafka
