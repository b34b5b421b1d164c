#!/usr/bin/env bash
# Apache Kafka in KRaft mode (one combined broker+controller) from the Maven Central
# jars, run with the machine's Java. No Docker, no distribution tarball.
#
#   scripts/kafka.sh install   fetch the jars into the cache (idempotent)
#   scripts/kafka.sh start     format storage if needed, start, wait until ready
#   scripts/kafka.sh stop      stop the broker started by start
#   scripts/kafka.sh status
#
# Environment: CLICKREC_KAFKA_PORT (9092), CLICKREC_CACHE (~/.cache/clickrec),
# CLICKREC_KAFKA_FRESH=1 wipes the data directory before starting,
# CLICKREC_KAFKA_HOST (127.0.0.1): the address the broker listens on and advertises to
# clients (the controller stays on 127.0.0.1), e.g. a veth address that a network
# namespace reaches (e2e/partition_test.go), CLICKREC_KAFKA_PROPS: extra server.properties
# lines (key=value, one per line), appended so they override the defaults below.
source "$(dirname "$0")/lib.sh"

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$(dirname "$0")/kafka/pom.xml")
KAFKA_HOME="$CLICKREC_CACHE/kafka-$KAFKA_VERSION"
PORT="${CLICKREC_KAFKA_PORT:-9092}"
HOST="${CLICKREC_KAFKA_HOST:-127.0.0.1}"
CPORT=$((PORT + 1))
DATA="$CLICKREC_RUN/kafka-data-$PORT"
NAME="kafka-$PORT"

install() {
  if [[ -f $KAFKA_HOME/.complete ]]; then return 0; fi
  command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
  command -v mvn >/dev/null || die "mvn not found: apt-get install maven"
  log "kafka: fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies from Maven Central"
  rm -rf "$KAFKA_HOME"
  (cd "$(dirname "$0")/kafka" && mvn -q -B dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_HOME/libs") || die "maven could not fetch the Kafka jars"
  touch "$KAFKA_HOME/.complete"
  log "kafka: jars in $KAFKA_HOME/libs"
}

java_run() {
  java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

start() {
  install
  if pid_alive "$NAME"; then log "kafka: already running on $HOST:$PORT"; return 0; fi
  [[ ${CLICKREC_KAFKA_FRESH:-0} == 1 ]] && rm -rf "$DATA"
  mkdir -p "$DATA/logs"
  cat > "$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA/logs
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.segment.bytes=67108864
# A transactional produce that reaches a partition while the previous transaction's markers
# are still being written is retried by the broker after this backoff (default 20 ms: it
# showed up as a 22 ms mode in the hot path's produce latency). See README, "Broker settings".
add.partitions.to.txn.retry.backoff.ms=1
# The consumer group protocol (KIP-848), which the hot path uses on Kafka 4.3+: a member learns
# that it gets or gives up partitions only from its next heartbeat, whose interval the broker
# sets (default 5 s, and at least 5 s: each join stalled ≈ 5 s); the session timeout, after
# which a dead member's partitions move, is the broker's too (default 45 s, at least 45 s).
# See README, "Broker settings".
group.consumer.heartbeat.interval.ms=100
group.consumer.min.heartbeat.interval.ms=100
group.consumer.session.timeout.ms=10000
group.consumer.min.session.timeout.ms=6000
PROPS
  if [[ -n ${CLICKREC_KAFKA_PROPS:-} ]]; then printf '%s\n' "$CLICKREC_KAFKA_PROPS" >>"$DATA/server.properties"; fi
  write_broker_log4j2 "$DATA/log4j2.properties"
  if [[ ! -f $DATA/logs/meta.properties ]]; then
    log "kafka: formatting KRaft storage in $DATA/logs"
    local id
    id=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format -t "$id" -c "$DATA/server.properties" >"$CLICKREC_RUN/$NAME.log" 2>&1 ||
      die "kafka storage format failed (see $CLICKREC_RUN/$NAME.log)"
  fi
  log "kafka: starting $KAFKA_VERSION on $HOST:$PORT (controller 127.0.0.1:$CPORT)"
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$DATA/server.properties" \
    >>"$CLICKREC_RUN/$NAME.log" 2>&1 </dev/null &
  echo $! >"$CLICKREC_RUN/$NAME.pid"
  wait_port "$HOST" "$PORT" 90 "$NAME"
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q 'Kafka Server started' "$CLICKREC_RUN/$NAME.log" && break
    pid_alive "$NAME" || die "kafka exited during start (log: $CLICKREC_RUN/$NAME.log)"
    sleep 0.1
  done
  log "kafka: ready on $HOST:$PORT"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop_pid "$NAME" ;;
status) pid_alive "$NAME" && echo "kafka running on $HOST:$PORT" || { echo "kafka not running"; exit 1; } ;;
*) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
