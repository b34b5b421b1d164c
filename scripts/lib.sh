# Shared by the scripts in this folder: where downloads are cached and where the
# servers started for tests and local runs keep their data, logs and pid files.
# Source it; do not run it.
set -euo pipefail

CLICKREC_CACHE="${CLICKREC_CACHE:-$HOME/.cache/clickrec}"
CLICKREC_RUN="${CLICKREC_RUN:-$CLICKREC_CACHE/run}"
mkdir -p "$CLICKREC_CACHE/bin" "$CLICKREC_RUN"

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# wait_port HOST PORT SECONDS NAME: wait until a TCP port accepts connections.
wait_port() {
  local host=$1 port=$2 secs=$3 name=$4 i
  for ((i = 0; i < secs * 10; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  die "$name did not open $host:$port within ${secs}s (log: $CLICKREC_RUN/$name.log)"
}

# pid_alive NAME: true if the pid file of NAME points at a running process.
pid_alive() {
  local f="$CLICKREC_RUN/$1.pid"
  [[ -f $f ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

# stop_pid NAME: TERM the process of NAME, then KILL it after 15 s.
stop_pid() {
  local name=$1 f="$CLICKREC_RUN/$1.pid" pid i
  [[ -f $f ]] || { log "$name: not running"; return 0; }
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$name: still up, killing"; kill -KILL "$pid" 2>/dev/null || true; }
  fi
  rm -f "$f"
}

# apt_install PKG...: install Debian packages, running apt-get update once per boot.
apt_install() {
  local stamp="$CLICKREC_RUN/.apt-updated"
  if [[ ! -f $stamp ]]; then
    log "apt: apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    touch "$stamp"
  fi
  log "apt: installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2 || die "apt-get install $* failed"
}

# write_broker_log4j2 FILE: the log4j2 config both local Kafka brokers use
# (warnings, plus the broker's start and stop lines that the scripts wait for).
write_broker_log4j2() {
  cat >"$1" <<'PROPS'
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka.server.KafkaServer
logger.kafka.level=INFO
logger.raft.name=kafka.server.KafkaRaftServer
logger.raft.level=INFO
PROPS
}
