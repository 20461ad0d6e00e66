#!/usr/bin/env bash
# Starts, stops and reports the ZooKeeper, etcd and Redis servers that colo's
# cluster-lock tests talk to, and the Kafka broker and RabbitMQ node of its
# links: plain background processes (no systemd), bound to 127.0.0.1 only.
#
#   tests/services/services.sh start  [zookeeper|etcd|redis|kafka|rabbitmq|all]   # default: all
#   tests/services/services.sh stop   [...]
#   tests/services/services.sh restart [...] [SECONDS]  # stop, wait SECONDS (default 0), then start
#                                               KEEPING the data (a server restart, or an outage)
#   tests/services/services.sh crash [...] [SECONDS]    # the same with SIGKILL instead of a clean stop
#   tests/services/services.sh status [...]     # exit 3 if one asked for is down
#   tests/services/services.sh env    [...]     # eval "$(tests/services/services.sh env)"
#
#   service    listens on (127.0.0.1 only)        env (from `env`)
#   zookeeper  21810 client (standalone mode)     COLO_ZOOKEEPER=127.0.0.1:21810
#   etcd       23790 client, 23800 peer           COLO_ETCD=http://127.0.0.1:23790
#   redis      63790                              COLO_REDIS=127.0.0.1:63790
#   kafka      two free ports picked when it is   COLO_KAFKA=127.0.0.1:<port>
#              launched (broker, controller); restart keeps them
#   rabbitmq   25720 AMQP, 25721 Erlang           COLO_RABBITMQ=127.0.0.1:25720
#              distribution, 25722 its own epmd,  (user guest, password guest)
#              25723-25733 rabbitmqctl's distribution
#
# Everything lives under $COLO_SERVICES_DIR (default /tmp/colo-services):
#   <service>/<service>.conf|zoo.cfg   the configuration written at each start
#   <service>/<service>.log            stdout and stderr (truncated at each start)
#   <service>/<service>.pid            the server's pid while it runs
#   kafka/ports                        "<broker port> <controller port>"
#   rabbitmq/epmd.pid                  the Erlang port mapper the node registers with
#   rabbitmq/home/                     HOME of the node and of rabbitmqctl (its Erlang cookie)
#   <service>/data/                    emptied at each start: these are test fixtures,
#                                      and a lock left by an earlier run must not block
#                                      (restart keeps it: ZooKeeper's sequence counters, etcd's
#                                      revision and Redis's fence counters must survive it,
#                                      or fencing tokens would start again from 1)
#
# start: a running service is left as it is (and reported "already up"); the
# others are launched together, then each is waited for (at most
# $COLO_SERVICES_TIMEOUT s, default 60) until it answers over its own protocol:
# ZooKeeper `ruok` -> `imok` and `srvr` -> a Mode line (four-letter words,
# whitelisted in zoo.cfg), `etcdctl endpoint health`, `redis-cli ping` -> PONG,
# Kafka: a record produced with kcat is acknowledged (topic colo.ready);
# RabbitMQ: `rabbitmqctl wait` on its pid file, then an AMQP handshake.
# One line per service; on failure the line names the log (and its tail
# follows) and the exit status is 1.
# stop: SIGTERM, SIGKILL after 15 s; stopping a stopped service is fine.
# RabbitMQ's node is a shell wrapper with the Erlang VM as its child: the
# signals go to its process group, and its epmd is stopped after it.
set -euo pipefail

state="${COLO_SERVICES_DIR:-/tmp/colo-services}"
ready_timeout="${COLO_SERVICES_TIMEOUT:-60}"
stop_timeout=15

zk_port=21810
etcd_port=23790
etcd_peer_port=23800
redis_port=63790
rabbitmq_port=25720  # AMQP; +1 Erlang distribution, +2 epmd, +3..+13 rabbitmqctl
all_services=(zookeeper etcd redis kafka rabbitmq)

# Kafka: Apache Kafka's jars from Maven Central (tests/services/install.sh
# fetches them with Maven into this cache), run with the machine's Java 17
# in KRaft mode, broker and controller in one process.
kafka_version=4.4.0
kafka_home="${COLO_KAFKA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/colo/kafka-$kafka_version}"

# ZooKeeper's classpath: the Debian jar names its dependencies in its
# manifest, except an SLF4J binding; slf4j-simple logs to stderr (our log).
zk_classpath=/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar

die() { echo "services: $*" >&2; exit 2; }
usage() {
  echo "usage: $0 start|stop|status|env [zookeeper|etcd|redis|kafka|rabbitmq|all]" >&2
  echo "       $0 restart|crash [zookeeper|etcd|redis|kafka|rabbitmq|all] [SECONDS]" >&2
  exit 2
}

dir_of() { echo "$state/$1"; }
log_of() { echo "$state/$1/$1.log"; }
pidfile_of() { echo "$state/$1/$1.pid"; }
addr_of() {
  case $1 in
    zookeeper) echo "127.0.0.1:$zk_port" ;;
    etcd) echo "http://127.0.0.1:$etcd_port" ;;
    redis) echo "127.0.0.1:$redis_port" ;;
    kafka) echo "127.0.0.1:$(kafka_port broker)" ;;
    rabbitmq) echo "127.0.0.1:$rabbitmq_port" ;;
  esac
}
ports_of() {
  case $1 in
    zookeeper) echo $zk_port ;;
    etcd) echo $etcd_port $etcd_peer_port ;;
    redis) echo $redis_port ;;
    kafka) ;;  # free ones are picked at launch
    rabbitmq) echo $rabbitmq_port $((rabbitmq_port + 1)) $((rabbitmq_port + 2)) ;;
  esac
}

# The Kafka broker's (`broker`) or controller's (`controller`) port, from
# kafka/ports, written when it is launched; 0 if none yet.
kafka_port() {
  local ports
  ports="$(cat "$state/kafka/ports" 2>/dev/null)" || { echo 0; return; }
  if [ "$1" = broker ]; then echo "${ports%% *}"; else echo "${ports##* }"; fi
}

# A TCP port of 127.0.0.1 that nothing listens on, in 20000-59999, other
# than $1 (if given). Random tries: good enough on a test machine.
free_port() {
  local port try
  for try in $(seq 1 200); do
    port=$((20000 + RANDOM % 40000))
    [ "$port" != "${1:-}" ] || continue
    port_open "$port" || { echo "$port"; return 0; }
  done
  die "kafka: no free port found on 127.0.0.1"
}
# The executable a live pid must be running, so that a pid file left from a
# crash, its pid since reused, is not taken for our server.
exe_of() {
  case $1 in
    zookeeper) echo java ;;
    etcd) echo etcd ;;
    redis) echo redis-server ;;
    kafka) echo java ;;
    rabbitmq) echo rabbitmq-server ;;  # the wrapper script (the VM is its child)
  esac
}

# A process that has exited but is not yet reaped (a zombie: its parent, once
# this script has exited, is init, which may reap late) counts as ended.
alive() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"  # the state follows "(comm) "
  [ "${stat%% *}" != Z ]
}

# Prints the pid of the service if it is running, else nothing (and returns 1).
running_pid() {
  local pidfile pid
  pidfile="$(pidfile_of "$1")"
  [ -f "$pidfile" ] || return 1
  pid="$(<"$pidfile")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  # /proc/PID/exe is readable by the owner; comm is enough and always readable.
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$(exe_of "$1")" ] || return 1
  echo "$pid"
}

# shellcheck disable=SC2016  # $1 and $2 are the inner bash's arguments
port_open() {  # something accepts TCP connections on 127.0.0.1:$1
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# shellcheck disable=SC2016  # as above
zk_4lw() {  # sends a four-letter word, prints the answer
  timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf %s "$2" >&3 && cat <&3' _ "$zk_port" "$1" 2>/dev/null
}

ready() {
  case $1 in
    zookeeper)
      [ "$(zk_4lw ruok)" = imok ] && zk_4lw srvr | grep -q '^Mode: ' ;;
    etcd)
      etcdctl --endpoints="$(addr_of etcd)" --dial-timeout=2s --command-timeout=3s \
        endpoint health >/dev/null 2>&1 ;;
    redis)
      [ "$(timeout 3 redis-cli -h 127.0.0.1 -p $redis_port ping 2>/dev/null)" = PONG ] ;;
    kafka)
      # One record produced and acknowledged (the topic is auto-created);
      # kcat exits non-zero when the delivery fails within message.timeout.ms.
      echo ready | timeout 10 kcat -P -b "$(addr_of kafka)" -t colo.ready -X message.timeout.ms=3000 \
        -X log_level=0 >/dev/null 2>&1 ;;
    rabbitmq)
      # The AMQP 0-9-1 protocol header; a broker answers with a frame of
      # type 1 (method: connection.start). Its listener opens last at boot.
      [ "$(timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "AMQP\0\0\011\001" >&3 &&
           head -c 1 <&3 | od -An -tu1' _ "$rabbitmq_port" 2>/dev/null | tr -d ' ')" = 1 ] ;;
  esac
}

# RabbitMQ's environment, for the node and for rabbitmqctl alike (the same
# HOME: the same Erlang cookie), into the array rabbitmq_env. The programs
# of /usr/lib/rabbitmq/bin, not the /usr/sbin wrappers (those switch to the
# rabbitmq user and its HOME). Node name @localhost: the short host name
# may not resolve. Erlang distribution on loopback only (else 0.0.0.0).
rabbitmq_vars() {
  local dir erl_args="-kernel inet_dist_use_interface {127,0,0,1}"
  dir="$(dir_of rabbitmq)"
  rabbitmq_env=(HOME="$dir/home" RABBITMQ_NODENAME=colo-test@localhost
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$rabbitmq_port
    RABBITMQ_DIST_PORT=$((rabbitmq_port + 1)) ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT=$((rabbitmq_port + 2))
    RABBITMQ_CTL_DIST_PORT_MIN=$((rabbitmq_port + 3)) RABBITMQ_CTL_DIST_PORT_MAX=$((rabbitmq_port + 13))
    RABBITMQ_MNESIA_BASE="$dir/data/mnesia" RABBITMQ_LOG_BASE="$dir/data/log"
    RABBITMQ_PID_FILE="$dir/server.pid" RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$erl_args" RABBITMQ_CTL_ERL_ARGS="$erl_args")
}
rabbitmqctl_() {  # rabbitmqctl ARGS... for our node (never once its epmd is stopped: it would start another)
  rabbitmq_vars
  env "${rabbitmq_env[@]}" /usr/lib/rabbitmq/bin/rabbitmqctl "$@"
}

# Processes of process group $1 that are not zombies.
group_alive() {
  ps -e -o pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

write_config() {
  local dir
  dir="$(dir_of "$1")"
  case $1 in
    zookeeper)
      cat >"$dir/zoo.cfg" <<EOF
# Written by tests/services/services.sh; rewritten at each start.
# Standalone server (ZooKeeperServerMain) on loopback only.
dataDir=$dir/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
# Sessions of 1 to 30 s (2 and 20 ticks at most are the defaults' reach).
tickTime=1000
minSessionTimeout=1000
maxSessionTimeout=30000
# No limit on connections from one address: tests open many from 127.0.0.1.
maxClientCnxns=0
# No AdminServer (it would listen on 8080 on every address).
admin.enableServer=false
# Four-letter words that the readiness check and people may use.
4lw.commands.whitelist=ruok,srvr,stat,mntr,cons,dump,wchs,wchc,conf,envi
EOF
      ;;
    redis)
      cat >"$dir/redis.conf" <<EOF
# Written by tests/services/services.sh; rewritten at each start.
bind 127.0.0.1
port $redis_port
protected-mode yes
daemonize no
dir $dir/data
# The append-only file keeps colo's fence counters across a restart
# (services.sh start empties the folder anyway). No RDB snapshots.
save ""
appendonly yes
appendfsync always
logfile ""
EOF
      ;;
    kafka)
      local broker controller
      broker="$(kafka_port broker)"
      controller="$(kafka_port controller)"
      cat >"$dir/server.properties" <<EOF
# Written by tests/services/services.sh; rewritten at each start.
# KRaft: broker and controller in one process, on loopback only.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller
listeners=PLAINTEXT://127.0.0.1:$broker,CONTROLLER://127.0.0.1:$controller
advertised.listeners=PLAINTEXT://127.0.0.1:$broker,CONTROLLER://127.0.0.1:$controller
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data/log
# One broker: the internal topics have one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Consumer groups start at once (no wait for more members).
group.initial.rebalance.delay.ms=0
# Two cores: few threads. The log cleaner's buffer must fit a 128 MB heap
# (its default takes all of it, and the broker dies at start).
num.io.threads=2
num.network.threads=2
background.threads=2
log.cleaner.dedupe.buffer.size=8388608
EOF
      cat >"$dir/log4j2.properties" <<EOF
# Written by tests/services/services.sh: warnings, and the start and stop lines.
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.out.ref=out
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
EOF
      ;;
    rabbitmq)
      # The listener and the node name come from the environment
      # (rabbitmq_vars); no plugins (no management listener on another port).
      cat >"$dir/rabbitmq.conf" <<EOF
# Written by tests/services/services.sh; rewritten at each start.
log.file.level = info
EOF
      echo '[].' >"$dir/advanced.config"
      echo '[].' >"$dir/enabled_plugins"
      : >"$dir/rabbitmq-env.conf"
      ;;
    etcd) ;;  # command-line flags only (launch below)
  esac
}

# Launches the service in the background; does not wait.
launch() {
  local svc="$1" dir log pid
  dir="$(dir_of "$svc")"
  log="$(log_of "$svc")"
  mkdir -p "$dir"
  [ "${keep_data:-0}" = 1 ] || rm -rf "$dir/data"
  mkdir -p "$dir/data"
  if [ "$svc" = kafka ] && { [ "${keep_data:-0}" != 1 ] || [ ! -f "$dir/ports" ]; }; then
    local broker_port
    broker_port="$(free_port)"
    echo "$broker_port $(free_port "$broker_port")" >"$dir/ports"
  fi
  write_config "$svc"
  local cmd
  case $svc in
    zookeeper)
      command -v java >/dev/null || die "zookeeper: no java (run tests/services/install.sh)"
      [ -f /usr/share/java/zookeeper.jar ] || die "zookeeper: no /usr/share/java/zookeeper.jar (run tests/services/install.sh)"
      # Small heap, serial GC and the client compiler: the machine has 2 cores
      # and ZooKeeper idles here. No JMX agent.
      cmd=(java -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
           -Djava.net.preferIPv4Stack=true
           -Dorg.slf4j.simpleLogger.defaultLogLevel=info
           -Dorg.slf4j.simpleLogger.showDateTime=true
           -Dzookeeper.jmx.log4j.disable=true
           -cp "$zk_classpath" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg")
      ;;
    etcd)
      command -v etcd >/dev/null || die "etcd: no etcd (run tests/services/install.sh)"
      cmd=(etcd --name colo-test --data-dir "$dir/data"
           --listen-client-urls "http://127.0.0.1:$etcd_port"
           --advertise-client-urls "http://127.0.0.1:$etcd_port"
           --listen-peer-urls "http://127.0.0.1:$etcd_peer_port"
           --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port"
           --initial-cluster "colo-test=http://127.0.0.1:$etcd_peer_port"
           --initial-cluster-state new
           --heartbeat-interval 50 --election-timeout 500
           --logger zap --log-outputs stderr)
      ;;
    redis)
      command -v redis-server >/dev/null || die "redis: no redis-server (run tests/services/install.sh)"
      cmd=(redis-server "$dir/redis.conf")
      ;;
    kafka)
      command -v java >/dev/null || die "kafka: no java (run tests/services/install.sh)"
      command -v kcat >/dev/null || die "kafka: no kcat for the readiness check (run tests/services/install.sh)"
      compgen -G "$kafka_home/lib/kafka_2.13-*.jar" >/dev/null ||
        die "kafka: no jars in $kafka_home/lib (run tests/services/install.sh)"
      # A small heap, serial GC and the client compiler: ready about 3 s
      # after start with about 160 MB of RSS (-Xmx512m: 5.5 s, 350 MB).
      local jvm=(java -Xmx128m -Xms32m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=48m
                 -Xss512k -Djava.net.preferIPv4Stack=true -Dlog4j2.configurationFile="$dir/log4j2.properties"
                 -cp "$kafka_home/lib/*")
      if [ ! -f "$dir/data/log/meta.properties" ]; then
        # KRaft storage is formatted once per data directory, with a new
        # cluster id: 16 random bytes in URL-safe base64, unpadded.
        local id
        id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
        if ! "${jvm[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" --standalone \
          >"$log" 2>&1; then
          echo "kafka: FAILED: formatting its storage failed; log: $log" >&2
          tail -n 15 "$log" | sed 's/^/  | /' >&2
          return 1
        fi
      fi
      cmd=("${jvm[@]}" kafka.Kafka "$dir/server.properties")
      ;;
    rabbitmq)
      [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] ||
        die "rabbitmq: no /usr/lib/rabbitmq/bin/rabbitmq-server (run tests/services/install.sh)"
      command -v epmd >/dev/null || die "rabbitmq: no epmd (run tests/services/install.sh)"
      mkdir -p "$dir/home" "$dir/data/log"
      rm -f "$dir/server.pid"  # `rabbitmqctl wait` must not read the pid of an earlier run
      # Its own epmd first, so that we hold its pid: the node (and every
      # rabbitmqctl) would otherwise start one that outlives them.
      if ! { [ -f "$dir/epmd.pid" ] && alive "$(<"$dir/epmd.pid")"; }; then
        setsid epmd -port $((rabbitmq_port + 2)) -address 127.0.0.1 </dev/null >"$dir/epmd.log" 2>&1 &
        echo $! >"$dir/epmd.pid"
      fi
      rabbitmq_vars
      cmd=(env "${rabbitmq_env[@]}" /usr/lib/rabbitmq/bin/rabbitmq-server)
      ;;
  esac
  # setsid: a session of its own, so that a terminal's ^C or a runner killing
  # the caller's process group does not take the server down half-way. The
  # background job is not a group leader, so setsid execs in place and $! is
  # the server's pid.
  setsid "${cmd[@]}" </dev/null >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$(pidfile_of "$svc")"
}

# Waits until the service is ready; prints its line. Returns 1 on failure.
await() {
  local svc="$1" log deadline
  log="$(log_of "$svc")"
  deadline=$((SECONDS + ready_timeout))
  if [ "$svc" = rabbitmq ]; then
    # Until the node has started its application (fails at once if the
    # process whose pid is in the file dies); the loop below then checks
    # its AMQP listener.
    rabbitmqctl_ wait --timeout "$ready_timeout" "$(dir_of rabbitmq)/server.pid" >>"$(dir_of rabbitmq)/wait.log" 2>&1 || true
  fi
  local pid
  pid="$(<"$(pidfile_of "$svc")")"
  while ! ready "$svc"; do
    # alive, not running_pid: until its exec the new process is still named
    # bash or setsid, and a busy machine can be that slow.
    if ! alive "$pid"; then
      echo "$svc: FAILED: the server exited during start; log: $log" >&2
      tail -n 15 "$log" | sed 's/^/  | /' >&2
      rm -f "$(pidfile_of "$svc")"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      echo "$svc: FAILED: not ready after ${ready_timeout} s (left running, pid $(running_pid "$svc")); log: $log" >&2
      tail -n 15 "$log" | sed 's/^/  | /' >&2
      return 1
    fi
    sleep 0.2
  done
  echo "$svc: up on $(addr_of "$svc") (pid $(running_pid "$svc"), log $log)"
}

cmd_start() {
  local svc pid status=0 launched=()
  mkdir -p "$state" || die "cannot create the state directory $state"
  for svc in "$@"; do
    if pid="$(running_pid "$svc")"; then
      continue
    fi
    local port taken=""
    for port in $(ports_of "$svc"); do
      if port_open "$port"; then taken=$port; break; fi
    done
    if [ -n "$taken" ]; then
      echo "$svc: FAILED: 127.0.0.1:$taken is taken by a process that services.sh did not start from $state (try: ss -ltnp 'sport = :$taken')" >&2
      status=1
      continue
    fi
    launch "$svc" || { status=1; continue; }
    launched+=("$svc")
  done
  for svc in "$@"; do
    if [[ " ${launched[*]-} " == *" $svc "* ]]; then
      await "$svc" || status=1
    elif pid="$(running_pid "$svc")"; then
      if ready "$svc"; then
        echo "$svc: already up on $(addr_of "$svc") (pid $pid, log $(log_of "$svc"))"
      else
        # Running but not answering: maybe still starting (another start
        # in parallel); wait like a fresh one.
        await "$svc" || status=1
      fi
    fi
  done
  return $status
}

# stop (crash=1: cmd_crash): SIGTERM, SIGKILL after stop_timeout.
cmd_stop() {
  local svc pid deadline
  for svc in "$@"; do
    if ! pid="$(running_pid "$svc")"; then
      rm -f "$(pidfile_of "$svc")"
      echo "$svc: not running"
      continue
    fi
    if [ "${crash:-0}" = 1 ]; then
      if [ "$svc" = rabbitmq ]; then
        kill -KILL -- "-$pid" 2>/dev/null || true
        while group_alive "$pid"; do sleep 0.05; done
      else
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.05; done
      fi
      echo "$svc: killed -9 (pid $pid)"
    elif [ "$svc" = rabbitmq ]; then
      stop_group "$pid"
    else
      kill -TERM "$pid" 2>/dev/null || true
      deadline=$((SECONDS + stop_timeout))
      while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
      if alive "$pid"; then
        kill -KILL "$pid" 2>/dev/null || true
        while alive "$pid"; do sleep 0.1; done
        echo "$svc: killed (pid $pid did not end ${stop_timeout} s after SIGTERM)"
      else
        echo "$svc: stopped (pid $pid)"
      fi
    fi
    rm -f "$(pidfile_of "$svc")"
  done
  [[ " $* " != *" rabbitmq "* ]] || stop_epmd
}

# crash: SIGKILL at once (RabbitMQ: its process group), as a server dies in
# a power cut or by the OOM killer; what the server synced stays in its data.
cmd_crash() { crash=1 cmd_stop "$@"; }

# RabbitMQ: SIGTERM to the wrapper's process group (a SIGKILL of the wrapper
# alone would leave the VM, beam.smp, running), SIGKILL after stop_timeout.
stop_group() {
  local pid="$1" deadline
  kill -TERM -- "-$pid" 2>/dev/null || true
  deadline=$((SECONDS + stop_timeout))
  while group_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if group_alive "$pid"; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    while group_alive "$pid"; do sleep 0.1; done
    echo "rabbitmq: killed (process group $pid did not end ${stop_timeout} s after SIGTERM)"
  else
    echo "rabbitmq: stopped (pid $pid)"
  fi
}

# The node's epmd, last (after the node and any rabbitmqctl).
stop_epmd() {
  local file pid
  file="$(dir_of rabbitmq)/epmd.pid"
  [ -f "$file" ] || return 0
  pid="$(<"$file")"
  if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = epmd ]; then
    kill -TERM "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$file"
}

cmd_status() {
  local svc pid status=0
  for svc in "$@"; do
    if pid="$(running_pid "$svc")"; then
      if ready "$svc"; then
        echo "$svc: up on $(addr_of "$svc") (pid $pid, log $(log_of "$svc"))"
      else
        echo "$svc: running but not ready (pid $pid, log $(log_of "$svc"))"
        status=3
      fi
    else
      echo "$svc: down"
      status=3
    fi
  done
  return $status
}

cmd_env() {
  local svc
  for svc in "$@"; do
    case $svc in
      zookeeper) echo "export COLO_ZOOKEEPER=$(addr_of zookeeper)" ;;
      etcd) echo "export COLO_ETCD=$(addr_of etcd)" ;;
      redis) echo "export COLO_REDIS=$(addr_of redis)" ;;
      kafka) echo "export COLO_KAFKA=$(addr_of kafka)" ;;
      rabbitmq) echo "export COLO_RABBITMQ=$(addr_of rabbitmq)" ;;
    esac
  done
}

(($# >= 1 && $# <= 3)) || usage
action="$1"
which="${2:-all}"
pause="${3:-0}"
(($# < 3)) || [ "$action" = restart ] || [ "$action" = crash ] || usage
[[ "$pause" =~ ^[0-9]+(\.[0-9]+)?$ ]] || usage
case $which in
  all) services=("${all_services[@]}") ;;
  zookeeper | etcd | redis | kafka | rabbitmq) services=("$which") ;;
  *) usage ;;
esac
case $action in
  start) cmd_start "${services[@]}" ;;
  stop) cmd_stop "${services[@]}" ;;
  restart)
    cmd_stop "${services[@]}"
    sleep "$pause"
    keep_data=1 cmd_start "${services[@]}"
    ;;
  crash)
    cmd_crash "${services[@]}"
    sleep "$pause"
    keep_data=1 cmd_start "${services[@]}"
    ;;
  status) cmd_status "${services[@]}" ;;
  env) cmd_env "${services[@]}" ;;
  *) usage ;;
esac
