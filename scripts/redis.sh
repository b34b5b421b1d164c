#!/usr/bin/env bash
# redis-server from Debian, on loopback, no persistence (a test and demo server).
#
#   scripts/redis.sh install|start|stop|status
#
# Environment: CLICKREC_REDIS_PORT (6379).
source "$(dirname "$0")/lib.sh"

PORT="${CLICKREC_REDIS_PORT:-6379}"
NAME="redis-$PORT"

install() {
  command -v redis-server >/dev/null && return 0
  log "redis: installing redis-server from Debian"
  apt_install redis-server
}

start() {
  install
  if pid_alive "$NAME"; then log "redis: already running on 127.0.0.1:$PORT"; return 0; fi
  log "redis: starting on 127.0.0.1:$PORT"
  redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no \
    --dir "$CLICKREC_RUN" --daemonize no >"$CLICKREC_RUN/$NAME.log" 2>&1 </dev/null &
  echo $! >"$CLICKREC_RUN/$NAME.pid"
  wait_port 127.0.0.1 "$PORT" 20 "$NAME"
  log "redis: ready on 127.0.0.1:$PORT"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop_pid "$NAME" ;;
status) pid_alive "$NAME" && echo "redis running on 127.0.0.1:$PORT" || { echo "redis not running"; exit 1; } ;;
*) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
