#!/usr/bin/env bash
# A second Apache Kafka broker (KRaft, combined broker+controller) whose client
# listeners require SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512): SASL_PLAINTEXT on
# port P and SASL_SSL on port P+2, with a certificate signed by a test CA made
# with the JDK's keytool. It runs from the jars scripts/kafka.sh installs, on its
# own ports and data directory, beside the default plaintext broker, for the
# tests of clickrec's --kafka-sasl-* and --kafka-tls* options (internal/kafkautil).
#
#   scripts/kafka-sasl.sh start     make the CA, format storage (SCRAM users included) if needed, start, wait until ready
#   scripts/kafka-sasl.sh stop
#   scripts/kafka-sasl.sh status
#   scripts/kafka-sasl.sh ca        print the path of the test CA (PEM)
#
# Users (test credentials, loopback only): clickrec / clickrec-secret for every
# mechanism; admin / admin-secret is the broker's own (inter-broker) PLAIN user.
# Environment: CLICKREC_KAFKA_SASL_PORT (P = 19092; controller P+1, SASL_SSL P+2),
# CLICKREC_KAFKA_FRESH=1 wipes the data directory before starting.
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
KAFKA_HOME="$CLICKREC_CACHE/kafka-$KAFKA_VERSION"
PORT="${CLICKREC_KAFKA_SASL_PORT:-19092}"
CPORT=$((PORT + 1))
TLS_PORT=$((PORT + 2))
DATA="$CLICKREC_RUN/kafka-sasl-data-$PORT"
NAME="kafka-sasl-$PORT"
USER=clickrec
PASSWORD=clickrec-secret
TLS_DIR="$DATA/tls"
STOREPASS=clickrec-test

java_run() {
  java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" "$@"
}

# make_ca: a test CA and a broker key pair for 127.0.0.1 signed by it, with the
# JDK's keytool (no openssl needed). Kafka reads the PKCS12 keystore; clients
# trust $TLS_DIR/ca.pem.
make_ca() {
  [[ -f $TLS_DIR/broker.p12 ]] && return 0
  command -v keytool >/dev/null || die "keytool not found: it comes with the JDK (apt-get install openjdk-17-jre-headless)"
  log "kafka-sasl: making a test CA and broker certificate in $TLS_DIR"
  rm -rf "$TLS_DIR" && mkdir -p "$TLS_DIR"
  local kt=(keytool -storetype PKCS12 -storepass "$STOREPASS" -keypass "$STOREPASS")
  "${kt[@]}" -genkeypair -alias ca -keyalg EC -groupname secp256r1 -dname CN=clickrec-test-ca \
    -ext bc:c -validity 3650 -keystore "$TLS_DIR/ca.p12" >/dev/null 2>&1 || die "keytool: CA key pair"
  "${kt[@]}" -exportcert -rfc -alias ca -keystore "$TLS_DIR/ca.p12" >"$TLS_DIR/ca.pem" 2>/dev/null || die "keytool: export CA"
  "${kt[@]}" -genkeypair -alias broker -keyalg EC -groupname secp256r1 -dname CN=127.0.0.1 \
    -validity 3650 -keystore "$TLS_DIR/broker.p12" >/dev/null 2>&1 || die "keytool: broker key pair"
  "${kt[@]}" -certreq -alias broker -keystore "$TLS_DIR/broker.p12" 2>/dev/null |
    "${kt[@]}" -gencert -alias ca -keystore "$TLS_DIR/ca.p12" -rfc -validity 3650 \
      -ext SAN=ip:127.0.0.1,dns:localhost >"$TLS_DIR/broker.pem" 2>/dev/null || die "keytool: sign broker certificate"
  "${kt[@]}" -importcert -noprompt -alias ca -file "$TLS_DIR/ca.pem" -keystore "$TLS_DIR/broker.p12" >/dev/null 2>&1 ||
    die "keytool: import CA"
  "${kt[@]}" -importcert -alias broker -file "$TLS_DIR/broker.pem" -keystore "$TLS_DIR/broker.p12" >/dev/null 2>&1 ||
    die "keytool: import broker certificate"
}

# jaas LISTENER: the SASL settings of one listener.
jaas() {
  local l=$1
  cat <<PROPS
listener.name.$l.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_$USER="$PASSWORD";
listener.name.$l.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.$l.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
PROPS
}

start() {
  "$here/kafka.sh" install
  if pid_alive "$NAME"; then log "kafka-sasl: already running on 127.0.0.1:$PORT"; return 0; fi
  [[ ${CLICKREC_KAFKA_FRESH:-0} == 1 ]] && rm -rf "$DATA"
  mkdir -p "$DATA/logs"
  make_ca
  cat > "$DATA/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=SASL_PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$TLS_PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://127.0.0.1:$TLS_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=PLAIN
$(jaas sasl_plaintext)
$(jaas sasl_ssl)
ssl.keystore.type=PKCS12
ssl.keystore.location=$TLS_DIR/broker.p12
ssl.keystore.password=$STOREPASS
ssl.key.password=$STOREPASS
log.dirs=$DATA/logs
num.partitions=2
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.segment.bytes=16777216
add.partitions.to.txn.retry.backoff.ms=1
PROPS
  write_broker_log4j2 "$DATA/log4j2.properties"
  if [[ ! -f $DATA/logs/meta.properties ]]; then
    log "kafka-sasl: formatting KRaft storage in $DATA/logs with SCRAM users"
    local id
    id=$(java_run kafka.tools.StorageTool random-uuid)
    java_run kafka.tools.StorageTool format -t "$id" -c "$DATA/server.properties" \
      --add-scram "SCRAM-SHA-256=[name=$USER,password=$PASSWORD]" \
      --add-scram "SCRAM-SHA-512=[name=$USER,password=$PASSWORD]" \
      >"$CLICKREC_RUN/$NAME.log" 2>&1 || die "kafka-sasl storage format failed (see $CLICKREC_RUN/$NAME.log)"
  fi
  log "kafka-sasl: starting $KAFKA_VERSION with SASL on 127.0.0.1:$PORT (controller $CPORT)"
  nohup java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Dlog4j2.configurationFile="$DATA/log4j2.properties" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$DATA/server.properties" \
    >>"$CLICKREC_RUN/$NAME.log" 2>&1 </dev/null &
  echo $! >"$CLICKREC_RUN/$NAME.pid"
  wait_port 127.0.0.1 "$PORT" 90 "$NAME"
  local i
  for ((i = 0; i < 600; i++)); do
    grep -q 'Kafka Server started' "$CLICKREC_RUN/$NAME.log" && break
    pid_alive "$NAME" || die "kafka-sasl exited during start (log: $CLICKREC_RUN/$NAME.log)"
    sleep 0.1
  done
  log "kafka-sasl: ready: SASL_PLAINTEXT 127.0.0.1:$PORT, SASL_SSL 127.0.0.1:$TLS_PORT (CA $TLS_DIR/ca.pem), user $USER"
}

case "${1:-}" in
start) start ;;
stop) stop_pid "$NAME" ;;
status) pid_alive "$NAME" && echo "kafka-sasl running on 127.0.0.1:$PORT (SASL_SSL $TLS_PORT)" || { echo "kafka-sasl not running"; exit 1; } ;;
ca) echo "$TLS_DIR/ca.pem" ;;
*) echo "usage: $0 start|stop|status|ca" >&2; exit 2 ;;
esac
