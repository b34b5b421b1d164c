#!/usr/bin/env bash
# The test command: installs what is missing, starts the real servers the
# integration tests use (Kafka KRaft, a second Kafka broker with SASL and TLS,
# redis-server, Temporal dev server), runs every Go test with CI semantics for
# missing servers, and stops what it started.
#
#   scripts/test.sh [go test args...]     default: ./...
#
# Without arguments it also vets and tests every nested module
# (scripts/modules.sh). CLICKREC_TEST_SHORT=1 adds -short (skips the slow
# end-to-end scenarios).
source "$(dirname "$0")/lib.sh"
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")

started=()
cleanup() {
  local s
  for s in "${started[@]}"; do "$here/$s.sh" stop || true; done
}
trap cleanup EXIT

log "test: installing what is missing"
"$here/deps.sh"
# The full data sets, where they exist beside the clone: the full-data tests run
# on them; without them those tests skip (the committed slices cover the code).
"$here/data.sh" || log "test: the full data sets did not verify; the tests that need them skip"

for s in kafka kafka-sasl redis temporal; do
  if ! "$here/$s.sh" status >/dev/null 2>&1; then
    # A broker the test command starts begins empty: topics of earlier runs
    # (thousands, over weeks of test runs) slow the broker down.
    CLICKREC_KAFKA_FRESH=1 "$here/$s.sh" start
    started+=("$s")
  else
    log "test: $s already running, reusing it"
  fi
done

export CLICKREC_TEST_KAFKA_BROKERS="127.0.0.1:${CLICKREC_KAFKA_PORT:-9092}"
export CLICKREC_TEST_KAFKA_SASL_BROKERS="127.0.0.1:${CLICKREC_KAFKA_SASL_PORT:-19092}"
export CLICKREC_TEST_KAFKA_SASL_TLS_BROKERS="127.0.0.1:$((${CLICKREC_KAFKA_SASL_PORT:-19092} + 2))"
CLICKREC_TEST_KAFKA_SASL_CA=$("$here/kafka-sasl.sh" ca)
export CLICKREC_TEST_KAFKA_SASL_CA
export CLICKREC_TEST_REDIS_ADDR="127.0.0.1:${CLICKREC_REDIS_PORT:-6379}"
export CLICKREC_TEST_TEMPORAL_ADDR="127.0.0.1:${CLICKREC_TEMPORAL_PORT:-7233}"
CLICKREC_ONNXRUNTIME_LIB=$("$here/onnxruntime.sh" install)
export CLICKREC_ONNXRUNTIME_LIB
CLICKREC_TEMPORAL_BIN=$("$here/temporal.sh" install)
export CLICKREC_TEMPORAL_BIN
# Missing servers fail tests instead of skipping them (see internal/testenv).
export CI="${CI:-true}"

cd "$root"
args=("$@")
# The nested modules (scripts/modules.sh: the deploy checks, the dashboards,
# the browser test, the containers runner) have go.mod files of their own, so
# ./... stops at them; each is vetted and tested by itself, with the same
# environment. Given package arguments, only the main module is tested.
modules=()
if ((${#args[@]} == 0)); then
  args=(./...)
  mapfile -t modules < <("$here/modules.sh")
else
  log "test: arguments given, so only the main module is tested (not: $("$here/modules.sh" | tr '\n' ' '))"
fi
short=()
[[ ${CLICKREC_TEST_SHORT:-0} == 1 ]] && short=(-short)
log "test: go vet (main module)"
go vet ./...
for m in "${modules[@]}"; do
  log "test: go vet (module $m)"
  go -C "$m" vet ./...
done
failed=()
if [[ ${args[*]} == ./... ]]; then
  # Every package but e2e runs under the race detector: nearly all of them
  # run goroutines (the worker's loop, Redis writer, drift publisher and lag
  # watcher; the load test's reader and fleet; the evaluation's workers; the
  # web server's streams). It adds about two minutes on 2 cores. e2e drives
  # separate processes, built without it, and runs as it is.
  mapfile -t racy < <(go list ./... | grep -v '/e2e$')
  log "test: go test -race ${short[*]} (main module, ${#racy[@]} packages)"
  go test -race -count=1 -timeout 40m "${short[@]}" "${racy[@]}" || failed+=(main)
  log "test: go test ${short[*]} ./e2e (main module)"
  go test -count=1 -timeout 40m "${short[@]}" ./e2e || failed+=(main/e2e)
else
  log "test: go test ${short[*]} ${args[*]} (main module)"
  go test -count=1 -timeout 40m "${short[@]}" "${args[@]}" || failed+=(main)
fi
for m in "${modules[@]}"; do
  log "test: go test ${short[*]} ./... (module $m)"
  go -C "$m" test -count=1 -timeout 40m "${short[@]}" ./... || failed+=("$m")
done
((${#failed[@]} == 0)) || die "go test failed in: ${failed[*]}"
