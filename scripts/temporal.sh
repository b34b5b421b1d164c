#!/usr/bin/env bash
# The Temporal dev server: the `temporal` CLI built once from the Go module proxy into
# the cache (minutes the first time), then `temporal server start-dev` on loopback.
#
#   scripts/temporal.sh install   prints the path of the temporal binary
#   scripts/temporal.sh start|stop|status
#
# Environment: CLICKREC_TEMPORAL_PORT (7233; the UI listens on port+1000),
# CLICKREC_TEMPORAL_ARGS: extra arguments of `temporal server start-dev`, split on spaces
# (e.g. --dynamic-config-value matching.numTaskqueueReadPartitions=1).
# The database is $CLICKREC_RUN/temporal-<port>.db: a restart on the same port keeps it.
source "$(dirname "$0")/lib.sh"

# v1.5.1 builds with `go install`; v1.9.x does not (DESIGN.md).
TEMPORAL_CLI_VERSION=v1.5.1
BIN="$CLICKREC_CACHE/temporal-$TEMPORAL_CLI_VERSION/temporal"
PORT="${CLICKREC_TEMPORAL_PORT:-7233}"
UI_PORT=$((PORT + 1000))
NAME="temporal-$PORT"

install() {
  if [[ ! -x $BIN ]]; then
    log "temporal: building github.com/temporalio/cli $TEMPORAL_CLI_VERSION (first time only; takes a few minutes)"
    local dir
    dir=$(dirname "$BIN")
    mkdir -p "$dir"
    (cd /tmp && GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION") >&2 ||
      die "go install of the temporal CLI failed"
    log "temporal: built $BIN"
  fi
  echo "$BIN"
}

start() {
  install >/dev/null
  if pid_alive "$NAME"; then log "temporal: already running on 127.0.0.1:$PORT"; return 0; fi
  log "temporal: starting dev server on 127.0.0.1:$PORT (UI http://127.0.0.1:$UI_PORT)"
  local extra=()
  read -r -a extra <<<"${CLICKREC_TEMPORAL_ARGS:-}"
  "$BIN" server start-dev --ip 127.0.0.1 --port "$PORT" --ui-port "$UI_PORT" \
    --db-filename "$CLICKREC_RUN/temporal-$PORT.db" --log-level warn ${extra[@]+"${extra[@]}"} \
    >"$CLICKREC_RUN/$NAME.log" 2>&1 </dev/null &
  echo $! >"$CLICKREC_RUN/$NAME.pid"
  wait_port 127.0.0.1 "$PORT" 60 "$NAME"
  local i
  for ((i = 0; i < 600; i++)); do
    "$BIN" operator namespace describe --address "127.0.0.1:$PORT" default >/dev/null 2>&1 && break
    pid_alive "$NAME" || die "temporal exited during start (log: $CLICKREC_RUN/$NAME.log)"
    sleep 0.1
  done
  log "temporal: ready on 127.0.0.1:$PORT"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop) stop_pid "$NAME" ;;
status) pid_alive "$NAME" && echo "temporal running on 127.0.0.1:$PORT" || { echo "temporal not running"; exit 1; } ;;
*) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
